"""Several visuals per record (``data.max_visuals``): each ``<video>`` / ``<image>`` placeholder
takes the record's next video or picture; the sample carries one clip per visual; the models
splice each clip's tokens at its own placeholder, and a sample's unused slots change nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import DataConfig, KVideoConfig, VideoConfig
from kvideo.config.model import ModelConfig
from kvideo.data.conversation import IGNORE_INDEX
from kvideo.data.datasets.conversations import read_conversations
from kvideo.data.loader import build_dataset, collate
from kvideo.data.settings import ClipSettings
from kvideo.data.tokenizer import ByteTokenizer, ChatTokenizer, build_tokenizer, encode_row
from kvideo.model import build_model
from kvideo.model.pretrained_build import build_pretrained_vlm
from kvideo.model.sequence import splice, text_positions, visual_positions
from tests.helpers import videos as V
from tests.helpers.configs import tiny_hf_model, tiny_model
from tests.helpers.pretrained_vlms import FRAME_SIDE, VLM_TYPES
from tests.unit.test_images import picture
from tests.unit.test_packing import (
    FRAMES_VALID,
    MAX_FRAMES,
    TEXT_LEN,
    TEXTS,
    VIDEO_AT,
    assert_packed_equals_one_at_a_time,
    conversation_batch,
    run,
)

TALK = [{"from": "human", "value": "<image> then <video>, and <image>?"}, {"from": "gpt", "value": "same"}]


def write_records(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_each_placeholder_takes_the_next_visual_of_its_kind_and_mismatches_are_refused(
    tmp_path: Path,
) -> None:
    records = write_records(
        tmp_path / "train.jsonl", {"video": "v.mp4", "image": ["a.png", "b.jpg"], "conversations": TALK}
    )
    (row,) = read_conversations(str(records), max_visuals=3)
    assert [Path(p).name for p in (row.path, *row.more_visuals)] == ["a.png", "v.mp4", "b.jpg"]
    assert row.visuals == 3 and row.turns[0].text == "<video> then <video>, and <video>?"
    text = encode_row(ByteTokenizer(), row, "", 80)
    assert text.every_visual_at == (7, 13, 19)  # "[BOS]User: ", " then ", ", and ": bytes
    assert all(text.labels[at] == IGNORE_INDEX for at in text.every_visual_at)
    with pytest.raises(ValueError, match=f"{records} line 1: holds 3 visuals; data.max_visuals is 2"):
        read_conversations(str(records), max_visuals=2)
    late = [
        {"from": "human", "value": "<video>"},
        {"from": "gpt", "value": "a"},
        {"from": "human", "value": "<video>"},
    ]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"video": ["a.mp4", "b.mp4"], "conversations": TALK[1:]}, "0 <video> placeholder"),
        ({"video": ["a.mp4", "b.mp4"], "conversations": late}, "after the last assistant turn"),
        (
            {"video": ["a.mp4", "b.mp4"], "start": 1.0, "conversations": late[:1] * 2 + TALK[1:]},
            "'start' / 'end'",
        ),
    ]
    for record, message in cases:
        write_records(records, record)
        with pytest.raises(ValueError, match=f"{records} line 1: .*{message}"):
            read_conversations(str(records), max_visuals=3)
    # LLaVA-Video-178K marks its video <image>; a record of pictures only may mark them <video>
    video_marked_image = [{"from": "human", "value": "<image>\nWhat moves?"}, {"from": "gpt", "value": "a"}]
    write_records(records, {"video": "v.mp4", "conversations": video_marked_image})
    (row,) = read_conversations(str(records))
    assert Path(row.path).name == "v.mp4" and row.turns[0].text == "<video>\nWhat moves?"
    write_records(records, {"image": ["a.png", "b.png"], "conversations": late[:1] * 2 + TALK[1:]})
    (row,) = read_conversations(str(records), max_visuals=2)
    assert [Path(p).name for p in (row.path, *row.more_visuals)] == ["a.png", "b.png"]


def test_splice_places_each_block_at_its_own_place_and_unused_blocks_after_the_text() -> None:
    text = torch.tensor([[1, 2, 3, 4]])[..., None]
    visual = torch.tensor([[7, 8, 9, 10]])[..., None]  # two blocks of two
    for at, expected in (([1, 3], [1, 7, 8, 2, 3, 9, 10, 4]), ([1, 99], [1, 7, 8, 2, 3, 4, 9, 10])):
        visual_at = torch.tensor([at])
        spliced = splice(text, visual, visual_at)
        assert spliced[0, :, 0].tolist() == expected
        where = text_positions(visual_at, 4, 4, 1, torch.device("cpu"))
        assert torch.equal(spliced.gather(1, where[..., None]), text)
        assert torch.equal(
            spliced.gather(1, visual_positions(visual_at, 4, 1, torch.device("cpu"), 4)[..., None]), visual
        )


def _model(family: str, parts: tuple[Path, Path], packed: bool) -> tuple[Any, int, int]:
    torch.manual_seed(0)
    if family == "builtin":
        model: Any = build_model(
            tiny_model(patch_size=8, lm_depth=2, max_text_len=20), vocab_size=40, max_frames=3, frame_size=16
        )
        vocab, size = 40, 16
    else:
        cfg = tiny_hf_model(*parts, max_text_len=12)
        model = build_model(
            cfg, vocab_size=ChatTokenizer(str(parts[1])).vocab_size, max_frames=3, frame_size=64
        )
        vocab, size = 300, 64
    model.max_tokens_per_row = 0 if packed else None
    return model.eval(), vocab, size


def _clips(count: int, size: int, valid: list[int], seed: int) -> dict[str, torch.Tensor]:
    mask = torch.tensor([[i < n for i in range(3)] for n in valid])
    return {
        "frames": torch.randn(count, 3, 3, size, size, generator=torch.Generator().manual_seed(seed)),
        "frame_mask": mask,
        "frame_times": torch.where(mask, torch.arange(3) * 0.5, torch.tensor(-1.0)),
    }


def _two(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([first[key], second[key]], dim=1) for key in first}


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("family", ["builtin", "hf"])
def test_an_unused_slot_changes_nothing_and_a_second_clip_reaches_only_the_text_after_it(
    family: str, packed: bool, tiny_hf_parts: tuple[Path, Path]
) -> None:
    model, vocab, size = _model(family, tiny_hf_parts, packed)
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    first, second = _clips(2, size, [2, 3], seed=0), _clips(2, size, [3, 1], seed=1)
    one = model(**first, input_ids=ids, labels=labels, visual_at=torch.tensor([3, 5]))
    unused = _two(first, {**second, "frame_mask": torch.zeros(2, 3, dtype=torch.bool)})
    padded = model(**unused, input_ids=ids, labels=labels, visual_at=torch.tensor([[3, 12], [5, 12]]))
    torch.testing.assert_close(padded["logits"], one["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded["nll"], one["nll"], rtol=1e-5, atol=1e-5)
    assert torch.equal(padded["tokens"], one["tokens"])  # the unused slot is no real token

    visual_at = torch.tensor([[3, 8], [5, 8]])
    both = model(**_two(first, second), input_ids=ids, visual_at=visual_at)["logits"]
    moved = {**second, "frames": second["frames"] + 1.0}
    again = model(**_two(first, moved), input_ids=ids, visual_at=visual_at)["logits"]
    torch.testing.assert_close(again[:, :8], both[:, :8], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(again[:, 8:], both[:, 8:])


@pytest.mark.parametrize("family", ["builtin", "hf"])
def test_generation_with_an_unused_slot_is_generation_with_one_visual(
    family: str, tiny_hf_parts: tuple[Path, Path]
) -> None:
    model, vocab, size = _model(family, tiny_hf_parts, packed=False)
    first, second = _clips(2, size, [2, 3], seed=0), _clips(2, size, [3, 0], seed=1)
    context = torch.randint(0, vocab, (2, 6), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([6, 4])
    kwargs: dict[str, Any] = {"max_new_tokens": 4, "stop_ids": [-1], "context_len": lengths}
    one = model.generate(
        first["frames"],
        first["frame_mask"],
        context,
        frame_times=first["frame_times"],
        visual_at=torch.tensor([2, 1]),
        **kwargs,
    )
    two = _two(first, second)
    both = model.generate(
        two["frames"],
        two["frame_mask"],
        context,
        frame_times=two["frame_times"],
        visual_at=torch.tensor([[2, 4], [1, 12]]),
        **kwargs,
    )
    assert both[1] == one[1]  # row 1's second slot is unused
    assert len(both[0]) == 4


def test_a_record_of_a_video_and_a_picture_is_one_sample_and_a_bad_visual_skips_it(tmp_path: Path) -> None:
    clip = V.make_h264(tmp_path / "clip.mp4", seconds=2.0, fps=10)
    picture(tmp_path / "pic.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    ask = [{"from": "human", "value": "<video> and <image>?"}, {"from": "gpt", "value": "yes"}]
    records = write_records(
        tmp_path / "train.jsonl",
        {"video": Path(clip).name, "image": "pic.png", "conversations": ask},
        {"image": "pic.png", "conversations": [{"from": "human", "value": "<image>"}, *ask[1:]]},
        {"video": Path(clip).name, "image": "broken.png", "conversations": ask},
    )
    video = VideoConfig(data_root=str(records), dataset_type="conversations", frame_size=32, max_frames=4)
    cfg = KVideoConfig(
        video=video, data=DataConfig(max_visuals=2), model=tiny_model(patch_size=16, max_seq_len=96)
    )
    dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    both, single, bad = dataset[0], dataset[1], dataset[2]
    assert both["frames"].shape[0] == 8 and both["skip_reason"] == ""
    assert both["frame_mask"][:4].sum() >= 2 and both["frame_mask"][4:].tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert both["frame_times"][4] == 0.0 and both["visual_at"].tolist() == [7, 12]
    assert single["frame_mask"][4:].sum() == 0 and single["visual_at"][1] == len(single["input_ids"])
    assert bad["skip_reason"] == "unreadable" and (bad["labels"] == IGNORE_INDEX).all()
    assert Path(bad["path"]).name == "broken.png"  # the skip names the visual that failed
    batch = collate([both, single, bad])
    assert batch["visual_at"].shape == (3, 2) and batch["frames"].shape[:2] == (3, 8)


def two_slot_batch(tokenizer: Any, side: int, equal_counts: bool) -> dict[str, torch.Tensor]:
    """``test_packing``'s conversation batch with two clip slots a sample: samples 0, 2 and 3 hold
    two clips (at different places), sample 1 one (its second slot unused, at the text's end)."""
    first = conversation_batch(
        tokenizer, TEXTS, [MAX_FRAMES] * 4 if equal_counts else FRAMES_VALID, VIDEO_AT, side=side
    )
    second = conversation_batch(
        tokenizer, TEXTS, [MAX_FRAMES] * 4 if equal_counts else [2, 0, 1, 3], VIDEO_AT, side=side
    )
    second["frame_mask"][1] = False
    batch = {key: first[key] for key in ("input_ids", "labels", "text_len")}
    for key in ("frames", "frame_mask", "frame_times"):
        batch[key] = torch.cat([first[key], second[key].flip(0)], dim=1)
    batch["visual_at"] = torch.tensor([[0, 3], [2, TEXT_LEN], [5, 7], [1, 2]])
    return batch


@pytest.mark.parametrize("kind", VLM_TYPES)
def test_a_released_vlm_reads_each_clip_at_its_place_packed_as_padded(
    kind: str, tiny_vlms: dict[str, Path]
) -> None:
    """``model=pretrained`` (``kvideo.model.record_clips``): each record's clips become the model's
    videos in reading order, each block at its own place; an unused slot is no clip at all (sample
    1 equals itself with one visual); packed, the batch equals its samples one at a time, so the
    video arguments follow the packed rows clip by clip."""
    cfg = ModelConfig(
        name="pretrained", family="pretrained", path=str(tiny_vlms[kind]), max_text_len=TEXT_LEN
    )
    cfg = dataclasses.replace(cfg, freeze=[])
    tokenizer = build_tokenizer(DataConfig(), cfg)
    data = two_slot_batch(tokenizer, 2 * FRAME_SIDE[kind], equal_counts=kind.startswith("llava"))
    model = build_pretrained_vlm(cfg)
    with torch.no_grad():
        one = {key: value[1:2] for key, value in data.items()}
        single = {**one, "visual_at": one["visual_at"][:, 0]}
        for key in ("frames", "frame_mask", "frame_times"):
            single[key] = one[key][:, :MAX_FRAMES]
        torch.testing.assert_close(
            run(model, one, visual_at=True)["nll"], run(model, single, visual_at=True)["nll"]
        )
    assert_packed_equals_one_at_a_time(model.train(), data, 0, visual_at=True, grad_scale=True)
    if kind == "qwen2_5_vl":  # the text between the two blocks is the record's own
        ids = model.spliced(data["input_ids"][:1], None, [0, 3], [[-1, -2], [-3, -4, -5]], [0, 0])[0][
            0
        ].tolist()
        assert ids[:6] == [-1, -2, *data["input_ids"][0, :3].tolist(), -3]
