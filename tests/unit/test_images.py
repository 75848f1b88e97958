"""Pictures as data (``kvideo.decode.image``): a one-frame clip at time 0, sized by the frame rule a
video frame of that size gets, upright as a viewer shows it, RGB whatever its mode; a bad picture
is a counted skip with a video's reasons; images in conversation records and in manifests, beside
videos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kvideo.config import DataConfig, KVideoConfig, VideoConfig
from kvideo.data.datasets.conversations import read_conversations
from kvideo.data.loader import build_dataset
from kvideo.data.settings import ClipSettings
from kvideo.data.tokenizer import ByteTokenizer
from kvideo.decode.errors import DecodeError
from kvideo.decode.image import decode_image, is_image
from kvideo.decode.types import VideoBytes
from kvideo.registry import DATASETS
from kvideo.resize import Resize
from tests.helpers import videos as V
from tests.helpers.configs import tiny_model


def picture(path: Path, width: int = 80, height: int = 40, mode: str = "RGB", **save: Any) -> Path:
    """A left-red, right-blue picture (so a rotation or a mirror shows)."""
    data = np.zeros((height, width, 3), dtype=np.uint8)
    data[:, : width // 2, 0] = 255
    data[:, width // 2 :, 2] = 255
    Image.fromarray(data).convert(mode).save(path, **save)
    return path


def test_a_picture_is_one_frame_at_time_zero_sized_by_the_frame_rule(tmp_path: Path) -> None:
    path = picture(tmp_path / "p.png")
    square = decode_image(str(path), 32)
    assert square.frames.shape == (1, 32, 32, 3) and square.frames.dtype == torch.uint8
    assert square.times == [0.0] and square.meta.num_frames == 1
    assert square.frames[0, 16, 2].tolist() == [255, 0, 0] and square.frames[0, 16, 29].tolist() == [
        0,
        0,
        255,
    ]
    for rule in (Resize("keep_aspect", 32), Resize("max_pixels", 64, max_pixels=1024, factor=8)):
        clip = decode_image(str(path), rule)
        assert tuple(clip.frames.shape[1:3]) == rule.output_size(80, 40), rule
    assert decode_image(str(path), None).frames.shape == (1, 40, 80, 3)  # native size


def test_a_picture_is_read_upright_and_as_rgb_whatever_its_mode(tmp_path: Path) -> None:
    """EXIF orientation 6 (the camera held sideways) turns the stored 80x40 into a 40x80 picture."""
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = decode_image(str(picture(tmp_path / "r.jpg", exif=exif.tobytes())), None)
    assert rotated.frames.shape == (1, 80, 40, 3)
    for mode, name in (("L", "grey.png"), ("P", "palette.png"), ("RGBA", "alpha.png")):
        clip = decode_image(str(picture(tmp_path / name, mode=mode)), 16)
        assert clip.frames.shape == (1, 16, 16, 3), mode
    # A shard member's bytes decode as its file does.
    data = picture(tmp_path / "p.webp").read_bytes()
    assert torch.equal(
        decode_image(VideoBytes("s.tar#k.webp", data), 16).frames,
        decode_image(str(tmp_path / "p.webp"), 16).frames,
    )


def test_a_bad_picture_gets_a_videos_reasons(tmp_path: Path) -> None:
    good = picture(tmp_path / "good.png").read_bytes()
    cases = {
        "missing": tmp_path / "gone.png",
        "empty": tmp_path / "empty.png",
        "unreadable": tmp_path / "text.png",
        "decode_error": tmp_path / "cut.png",
        "not_a_file": tmp_path / "folder.png",
    }
    cases["empty"].write_bytes(b"")
    cases["unreadable"].write_bytes(b"<html>404 Not Found</html>" * 4)
    cases["decode_error"].write_bytes(good[: len(good) // 2])
    cases["not_a_file"].mkdir()
    for reason, path in cases.items():
        with pytest.raises(DecodeError) as caught:
            decode_image(str(path), 16)
        assert caught.value.reason == reason, (reason, caught.value)


def test_is_image_reads_the_suffix_of_a_file_or_a_shard_member() -> None:
    assert is_image("/x/a.JPG") and is_image("/x/s.tar#000001.webp") and not is_image("/x/a.mp4")
    assert not is_image("/x/s.tar#000001.mp4")


def test_conversation_records_may_hold_a_picture_and_a_bad_one_is_refused_naming_it(tmp_path: Path) -> None:
    records = tmp_path / "train.jsonl"
    lines: list[dict[str, Any]] = [
        {
            "image": ["pics/a.png"],
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour?"},
                {"from": "gpt", "value": "red"},
            ],
        },
        {
            "image": "pics/b.jpg",
            "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "blue"}],
        },
    ]
    records.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = read_conversations(str(records))
    assert [Path(r.path).name for r in rows] == ["a.png", "b.jpg"]
    assert rows[0].turns[0].text == "<video>\nWhat colour?" and rows[1].turns[0].text.startswith("<video>\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"video": "a.mp4", "image": "b.png"}, "0 <video> placeholder\\(s\\) for 1 path\\(s\\) in 'video'"),
        ({"image": ["a.png", "b.png"]}, "1 <image> placeholder\\(s\\) for 2 path\\(s\\) in 'image'"),
        ({"image": 5}, "'image' must be a path or a list of paths"),
        ({"image": "a.mp4"}, "'image' is 'a.mp4', expected a picture file"),
        ({}, "missing 'video' or 'image'"),
    ]
    for bad, message in cases:
        record = {**bad, "conversations": lines[0]["conversations"]}
        records.write_text(json.dumps(record) + "\n")
        with pytest.raises(ValueError, match=f"conversations {records} line 1: .*{message}"):
            read_conversations(str(records))


def test_a_manifest_of_pictures_and_videos_gives_one_frame_clips_beside_sampled_ones(tmp_path: Path) -> None:
    clip = V.make_h264(tmp_path / "clip.mp4", seconds=2.0, fps=10)
    pic = picture(tmp_path / "pic.jpg", quality=95)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    manifest = tmp_path / "train.jsonl"
    rows = [
        {"path": str(clip), "caption": "a clip"},
        {"path": str(pic), "caption": "a picture"},
        {"path": str(broken), "caption": "x"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    video = VideoConfig(
        data_root=str(manifest), dataset_type="manifest", frame_size=32, max_frames=4, min_frames=2
    )
    cfg = KVideoConfig(video=video, data=DataConfig(), model=tiny_model(patch_size=16))
    dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    sampled, still, bad = dataset[0], dataset[1], dataset[2]
    assert int(sampled["frame_mask"].sum()) >= 2
    assert still["frame_mask"].tolist() == [True, False, False, False] and still["skip_reason"] == ""
    assert still["frame_times"].tolist() == [0.0, -1.0, -1.0, -1.0]
    expected = decode_image(str(pic), 32).frames[0]
    assert torch.equal(still["frames"][0], expected) and not still["frames"][1:].any()
    assert bad["skip_reason"] == "unreadable" and not bad["frame_mask"].any()


def test_a_folder_of_captioned_pictures_is_a_dataset_in_either_layout(tmp_path: Path) -> None:
    sidecar = tmp_path / "sidecar"
    for split, names in (("train", ["b.png", "a/c.jpg", "d.png"]), ("validation", ["e.png"])):
        for name in names:
            (sidecar / split / name).parent.mkdir(parents=True, exist_ok=True)
            picture(sidecar / split / name)
            if name != "d.png":
                (sidecar / split / name).with_suffix(".txt").write_text(f"  caption of {name}\n")
    (sidecar / "train" / "notes.md").write_text("not a picture")
    hf = tmp_path / "hf"
    hf.mkdir()
    picture(hf / "x.png")
    (hf / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "text": "a red and blue x"}) + "\n")
    build = DATASETS.get("image_folder")

    def rows(root: Path, split: str = "train") -> list[Any]:
        return build(
            VideoConfig(data_root=str(root), dataset_type="image_folder"),
            DataConfig(),
            split=split,
            max_samples=0,
        )

    train = rows(sidecar)
    assert [r.clip_id for r in train] == ["b.png", "d.png", "a/c.jpg"]  # files of a folder, then its folders
    assert [r.caption for r in train] == ["caption of b.png", "", "caption of a/c.jpg"]
    assert [r.skip_reason for r in train] == ["", "no_caption", ""]
    assert [r.clip_id for r in rows(sidecar, "validation")] == ["e.png"]
    (only,) = rows(hf, "validation")  # no split folders: every split reads the pictures
    assert (only.path, only.caption) == (str(hf / "x.png"), "a red and blue x")
    (hf / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "label": 3}) + "\n")
    with pytest.raises(
        ValueError, match=r"metadata\.jsonl line 1: expected the caption under 'caption' or 'text'"
    ):
        rows(hf)
    with pytest.raises(FileNotFoundError, match="no such folder of pictures"):
        rows(tmp_path / "nowhere")
