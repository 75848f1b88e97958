"""A picture takes LLaVA-OneVision's, LLaVA-NeXT-Video's, SmolVLM2's and InternVL3's image route: cut
from its own size into its image processor's tiles in the data workers (``kvideo.data.picture_tiles``),
kvideo's logits are those of the model fed as its processor feeds the picture (the image
processor's own ``pixel_values``, ``image_sizes``, and the placeholder count its processor writes,
computed here by the processor classes' own arithmetic)."""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kvideo.config import DataConfig
from kvideo.data.loader import build_dataset
from kvideo.data.picture_tiles import PictureTiling
from kvideo.data.preprocess import normalize_frames, pixel_statistics
from kvideo.data.settings import ClipSettings, picture_tiling
from kvideo.data.tokenizer import build_tokenizer, encode_caption
from kvideo.model.pretrained_build import build_pretrained_vlm
from tests.helpers import videos as V
from tests.unit.test_pretrained_vlm import config

TILED = ("llava_onevision", "llava_next_video", "smolvlm", "internvl")
SLOTS = 8  # a visual's frame slots: SmolVLM2's 2 x 2 tiles and the whole fit
TEXT_LEN = 40
SMOLVLM_MARKS = ("<fake_token_around_image>", "<image>", "<global-img>")


def pictures(*sizes: tuple[int, int]) -> list[np.ndarray]:
    """Random pictures of ``sizes`` (height, width)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


def tiled_batch(folder: Path, images: list[np.ndarray]) -> tuple[Any, PictureTiling, dict[str, Any]]:
    """A caption of a record of ``images`` as the loader gives it: each picture's tiles in its
    own ``SLOTS`` frame slots, its size in ``picture_size``."""
    cfg = config(folder, video={"max_frames": SLOTS})
    tiling = picture_tiling(cfg.video, cfg.model)
    assert tiling is not None
    tokenizer = build_tokenizer(cfg.data, cfg.model)
    text = encode_caption(tokenizer, "Describe the image.", "a red ball", TEXT_LEN)
    count = len(images)
    frames = torch.zeros(1, count * SLOTS, 3, 56, 56)
    mask = torch.zeros(1, count * SLOTS, dtype=torch.bool)
    for k, tiles in enumerate(tiling.tiles([torch.from_numpy(image) for image in images])):
        frames[0, k * SLOTS : k * SLOTS + len(tiles)] = normalize_frames(
            tiles, statistics=pixel_statistics(cfg.model)
        )
        mask[0, k * SLOTS : k * SLOTS + len(tiles)] = True
    at = text.visual_at
    batch = {
        "frames": frames,
        "frame_mask": mask,
        "frame_times": torch.where(mask, 0.0, -1.0),
        "input_ids": torch.tensor([text.input_ids]),
        "labels": torch.tensor([text.labels]),
        "visual_at": torch.tensor([at] if count == 1 else [[at] * count]),
        "picture": torch.tensor([True] if count == 1 else [[True] * count]),
    }
    sizes = torch.tensor([image.shape[:2] for image in images])
    batch["picture_size"] = sizes if count == 1 else sizes[None]
    return cfg, tiling, batch


def llava_count(kind: str, folder: Path, size: tuple[int, int], hf_config: Any) -> int:
    """The ``<image>`` count LLaVA's processor writes for a picture of ``size``: its own
    ``_get_number_of_features`` (the processor itself needs torchvision for its video part, so its
    attributes are set as its ``processor_config.json`` would)."""
    from transformers import AutoImageProcessor, LlavaNextVideoProcessor, LlavaOnevisionProcessor

    cls = LlavaOnevisionProcessor if kind == "llava_onevision" else LlavaNextVideoProcessor
    processor: Any = cls.__new__(cls)
    processor.image_processor = AutoImageProcessor.from_pretrained(folder)
    grid = hf_config.vision_config.image_size // hf_config.vision_config.patch_size
    processor.num_image_tokens = grid * grid
    processor.vision_aspect_ratio = "anyres_max_9"
    processor.patch_size = hf_config.vision_config.patch_size
    processor.num_additional_image_tokens = 1  # CLIP's class token
    count = int(processor._get_number_of_features(*size, 56, 56))
    return count - 1 if hf_config.vision_feature_select_strategy == "default" else count


def internvl_text(model: Any, patches: int) -> str:
    """InternVL3's processor's ``replace_image_token`` for a picture of ``patches`` tiles."""
    return "<img>" + "<IMG_CONTEXT>" * model.geometry.tokens_per_frame * patches + "</img>"


def retokenized(tokenizer: Any, ids: list[int], at: int, text: str) -> list[int]:
    """``ids`` with ``text`` at ``at``, the whole tokenized as one string (as the processor
    tokenizes the rendered conversation)."""
    decode = partial(tokenizer.decode, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return [
        int(i) for i in tokenizer.encode(decode(ids[:at]) + text + decode(ids[at:]), add_special_tokens=False)
    ]


def reference_logits(kind: str, folder: Path, model: Any, batch: dict[str, Any], image: np.ndarray) -> Any:
    """The model run on its processor's inputs for ``image`` at the caption's visual place."""
    from transformers import AutoImageProcessor
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    processor = AutoImageProcessor.from_pretrained(folder)
    at, ids = int(batch["visual_at"].flatten()[0]), batch["input_ids"][0].tolist()
    hf = model.hf.config
    if kind == "internvl":  # its processor's images_kwargs: crop_to_patches
        theirs = processor(images=[image], crop_to_patches=True, return_tensors="pt")
        text = internvl_text(model, int(theirs["num_patches"][0]))
        reference_ids = torch.tensor([retokenized(model.tokenizer, ids, at, text)])
        inputs = {"pixel_values": theirs["pixel_values"]}
    elif kind == "smolvlm":
        theirs = processor(images=[[image]], return_row_col_info=True, return_tensors="pt")
        rows, cols = theirs["rows"][0][0], theirs["cols"][0][0]
        text = get_image_prompt_string(rows, cols, model.geometry.tokens_per_frame, *SMOLVLM_MARKS)
        reference_ids = torch.tensor([retokenized(model.tokenizer, ids, at, text)])
        inputs = {"pixel_values": theirs["pixel_values"]}
    else:
        theirs = processor(images=[image], return_tensors="pt")
        count = llava_count(kind, folder, image.shape[:2], hf)
        reference_ids = torch.tensor([ids[:at] + [hf.image_token_id] * count + ids[at:]])
        inputs = {"pixel_values": theirs["pixel_values"], "image_sizes": theirs["image_sizes"]}
    with torch.no_grad():
        return model.hf(
            input_ids=reference_ids, attention_mask=torch.ones_like(reference_ids), **inputs, use_cache=False
        ).logits


@pytest.mark.parametrize("kind", TILED)
def test_a_picture_is_fed_as_the_models_processor_feeds_it(kind: str, tiny_vlms: dict[str, Path]) -> None:
    """A wide picture (44 x 100: LLaVA's 56 x 112 grid, SmolVLM2's 1 x 2 tiles) and a square one."""
    for image in pictures((44, 100), (56, 56)):
        cfg, _, batch = tiled_batch(tiny_vlms[kind], [image])
        model = build_pretrained_vlm(cfg.model).eval()
        reference = reference_logits(kind, tiny_vlms[kind], model, batch, image)
        with torch.no_grad():
            ours = model(**batch)["logits"]
        torch.testing.assert_close(ours[:, : reference.shape[1]], reference, rtol=1e-4, atol=1e-4)


def test_each_picture_of_a_record_gets_its_processors_tiles_and_count(tiny_vlms: dict[str, Path]) -> None:
    """A record of two pictures: LLaVA-OneVision's processor gives each one tile and
    ``num_image_tokens + 1`` placeholders (its multi-image rule, read through
    ``batch_num_images``); LLaVA-NeXT-Video's and SmolVLM2's tile each as they tile one alone."""
    from transformers import AutoImageProcessor
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    images = pictures((44, 100), (100, 44))
    for kind in TILED:
        folder = tiny_vlms[kind]
        cfg, _, batch = tiled_batch(folder, images)
        model = build_pretrained_vlm(cfg.model).eval()
        tiles = [int(batch["frame_mask"][0, k * SLOTS : (k + 1) * SLOTS].sum()) for k in range(2)]
        assert tiles == ([1, 1] if kind == "llava_onevision" else [3, 3])
        processor = AutoImageProcessor.from_pretrained(folder)
        at, ids, hf = int(batch["visual_at"][0, 0]), batch["input_ids"][0].tolist(), model.hf.config
        if kind == "internvl":
            theirs = processor(images=images, crop_to_patches=True, return_tensors="pt")
            text = "".join(internvl_text(model, int(n)) for n in theirs["num_patches"])
            reference_ids = torch.tensor([retokenized(model.tokenizer, ids, at, text)])
            inputs = {"pixel_values": theirs["pixel_values"]}
        elif kind == "smolvlm":
            theirs = processor(images=[images], return_row_col_info=True, return_tensors="pt")
            text = "".join(
                get_image_prompt_string(rows, cols, model.geometry.tokens_per_frame, *SMOLVLM_MARKS)
                for rows, cols in zip(theirs["rows"][0], theirs["cols"][0], strict=True)
            )
            reference_ids = torch.tensor([retokenized(model.tokenizer, ids, at, text)])
            inputs = {"pixel_values": theirs["pixel_values"]}
        else:
            theirs = processor(images=[images], return_tensors="pt")
            counts = [llava_count(kind, folder, image.shape[:2], hf) for image in images]
            if kind == "llava_onevision":  # its processor's replace_image_token, multi-image
                counts = [(hf.vision_config.image_size // hf.vision_config.patch_size) ** 2 + 1] * 2
            reference_ids = torch.tensor([ids[:at] + [hf.image_token_id] * sum(counts) + ids[at:]])
            inputs = {key: value for key, value in theirs.items() if key != "batch_num_images"}
            if kind == "llava_onevision":
                inputs["batch_num_images"] = theirs["batch_num_images"]
        with torch.no_grad():
            reference = model.hf(input_ids=reference_ids, **inputs, use_cache=False).logits
            ours = model(**batch)["logits"]
        torch.testing.assert_close(ours[:, : reference.shape[1]], reference, rtol=1e-4, atol=1e-4, msg=kind)


@pytest.mark.parametrize("kind", TILED)
def test_pictures_and_videos_packed_as_padded(kind: str, tiny_vlms: dict[str, Path]) -> None:
    """Three records: a video alone (its second slot unused); two pictures; a picture and a
    video, the longest. Packed rows read the samples longest first, another order than the
    batch's, so each route's arguments (LLaVA-OneVision's ``batch_num_images`` too) must follow
    the rows clip by clip."""
    folder = tiny_vlms[kind]
    cfg, tiling, _ = tiled_batch(folder, pictures((56, 56)))
    tokenizer = build_tokenizer(cfg.data, cfg.model)
    statistics = pixel_statistics(cfg.model)
    wide, tall, square = (torch.from_numpy(p) for p in pictures((44, 100), (100, 44), (56, 56)))
    generator = torch.Generator().manual_seed(0)
    video = [torch.randint(0, 256, (n, 56, 56, 3), dtype=torch.uint8, generator=generator) for n in (2, 4)]
    records: list[tuple[list[torch.Tensor], list[bool], list[tuple[int, ...]], list[int]]] = [
        ([video[0]], [False, False], [(0, 0), (0, 0)], [1, TEXT_LEN]),
        (
            tiling.tiles([square, tall]),
            [True, True],
            [tuple(square.shape[:2]), tuple(tall.shape[:2])],
            [1, 4],
        ),
        ([*tiling.tiles([wide]), video[1]], [True, False], [tuple(wide.shape[:2]), (0, 0)], [2, 6]),
    ]
    frames = torch.zeros(3, 2 * SLOTS, 3, 56, 56)
    mask = torch.zeros(3, 2 * SLOTS, dtype=torch.bool)
    for b, (clips, _, _, _) in enumerate(records):
        for k, clip in enumerate(clips):
            frames[b, k * SLOTS : k * SLOTS + len(clip)] = normalize_frames(clip, statistics=statistics)
            mask[b, k * SLOTS : k * SLOTS + len(clip)] = True
    texts = [encode_caption(tokenizer, "Describe.", caption, TEXT_LEN) for caption in ("a b", "c d e f", "g")]
    batch = {
        "frames": frames,
        "frame_mask": mask,
        "frame_times": torch.where(mask, 0.5, -1.0),
        "input_ids": torch.tensor([text.input_ids for text in texts]),
        "labels": torch.tensor([text.labels for text in texts]),
        "text_len": torch.tensor([text.text_len for text in texts]),
        "visual_at": torch.tensor([places for *_, places in records]),
        "picture": torch.tensor([flags for _, flags, _, _ in records]),
        "picture_size": torch.tensor([sizes for _, _, sizes, _ in records]),
    }
    model = build_pretrained_vlm(cfg.model).eval()
    with torch.no_grad():
        padded = model(**batch)
        model.max_tokens_per_row = 0
        packed = model(**batch)
    torch.testing.assert_close(packed["nll"], padded["nll"], rtol=1e-5, atol=1e-5)
    assert packed["computed_tokens"] < padded["computed_tokens"]


def test_a_run_whose_pictures_cannot_fit_their_slots_is_refused_in_one_line(
    tiny_vlms: dict[str, Path],
) -> None:
    """LLaVA's grid is the model's: 3 tiles (the whole and 1 x 2) need 3 frame slots."""
    cfg = config(tiny_vlms["llava_onevision"], video={"max_frames": 2})
    tiling = picture_tiling(cfg.video, cfg.model)
    assert tiling is not None and tiling.most_tiles() == 3
    with pytest.raises(
        ValueError, match=r"video.max_frames=2: llava_onevision cuts a picture into up to 3 tiles"
    ):
        tiling.check_slots()
    smol = picture_tiling(
        config(tiny_vlms["smolvlm"], video={"max_frames": 4}).video, config(tiny_vlms["smolvlm"]).model
    )
    assert smol is not None and smol.most_tiles() == 1  # 2 x 2 and the whole need 5: the whole alone
    smol.check_slots()
    assert picture_tiling(cfg.video, config(tiny_vlms["qwen2_vl"]).model) is None


def test_the_dataset_puts_a_pictures_tiles_in_its_slots_and_its_size_in_the_sample(
    tmp_path: Path, tiny_vlms: dict[str, Path]
) -> None:
    """Through the data workers' path: a conversation record of a video and a picture gives the
    picture's processor tiles (from its own size, not the frame rule's square) in the second
    visual's slots, and its decoded size in ``picture_size``; a run with too few slots for
    LLaVA's tiles is refused before any decoding."""
    clip = V.make_h264(tmp_path / "clip.mp4", seconds=2.0, fps=10)
    image = pictures((40, 90))[0]
    Image.fromarray(image).save(tmp_path / "pic.png")
    ask = [{"from": "human", "value": "<video> and <image>?"}, {"from": "gpt", "value": "yes"}]
    records = tmp_path / "train.jsonl"
    records.write_text(
        json.dumps({"video": Path(clip).name, "image": "pic.png", "conversations": ask}) + "\n"
    )
    folder = tiny_vlms["llava_onevision"]
    video = {"data_root": str(records), "dataset_type": "conversations", "max_frames": 4}
    cfg = dataclasses.replace(config(folder, video=video), data=DataConfig(max_visuals=2))
    settings = ClipSettings.of(cfg)
    item = build_dataset(settings, split="train", tokenizer=build_tokenizer(cfg.data, cfg.model))[0]
    assert item["skip_reason"] == "" and item["picture"].tolist() == [False, True]
    assert item["picture_size"].tolist() == [[0, 0], [40, 90]]
    assert settings.picture_tiling is not None
    (tiles,) = settings.picture_tiling.tiles([torch.from_numpy(image)])
    assert len(tiles) == 3 and item["frame_mask"][4:].tolist() == [True, True, True, False]
    assert torch.equal(item["frames"][4:7], tiles) and (item["frame_times"][4:7] == 0).all()
    dataset = build_dataset(settings, split="train", tokenizer=build_tokenizer(cfg.data, cfg.model))
    picture = max(settings.visual_tokens, settings.picture_tiling.most_tokens())
    assert dataset.token_costs() == [settings.padded_tokens - settings.visual_tokens + 2 * picture]
    narrow = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, max_frames=2))
    with pytest.raises(ValueError, match=r"set video.max_frames>=3"):
        build_dataset(ClipSettings.of(narrow), split="train", tokenizer=build_tokenizer(cfg.data, cfg.model))


@pytest.mark.parametrize("kind", TILED)
def test_generation_reads_the_tiled_pictures(kind: str, tiny_vlms: dict[str, Path]) -> None:
    """The model's own ``generate`` takes the image route's arguments (LLaVA-OneVision's
    ``batch_num_images`` too): its first greedy token after a context of two pictures is the
    forward's most likely one there."""
    cfg, _, batch = tiled_batch(tiny_vlms[kind], pictures((44, 100), (56, 56)))
    model = build_pretrained_vlm(cfg.model).eval()
    context = batch["input_ids"][:, : int(batch["visual_at"][0, 0]) + 3]
    inputs = {key: batch[key] for key in ("frame_times", "visual_at", "picture", "picture_size")}
    with torch.no_grad():
        logits = model(batch["frames"], batch["frame_mask"], context, **inputs)["logits"]
        (answer,) = model.generate(
            batch["frames"], batch["frame_mask"], context, **inputs, max_new_tokens=2, stop_ids=[-1]
        )
    assert answer[0] == int(logits[0, -1].argmax())


@pytest.mark.parametrize("kind", TILED)
def test_a_pictures_tokens_never_exceed_the_budgets_bound(kind: str, tiny_vlms: dict[str, Path]) -> None:
    """``PictureTiling.most_tokens`` bounds what any picture's block really holds (the token
    budget of batches counts it), and the widest grid reaches it for LLaVA."""
    cfg = config(tiny_vlms[kind], video={"max_frames": SLOTS})
    tiling = picture_tiling(cfg.video, cfg.model)
    assert tiling is not None
    model = build_pretrained_vlm(cfg.model).eval()
    sizes = ((44, 100), (100, 44), (56, 56), (30, 30), (300, 120))
    counts = []
    for image in pictures(*sizes):
        (tiles,) = tiling.tiles([torch.from_numpy(image)])
        frames = torch.zeros(1, SLOTS, 3, 56, 56)
        mask = torch.zeros(1, SLOTS, dtype=torch.bool)
        mask[0, : len(tiles)] = True
        block = model.video_inputs(
            frames, mask, torch.zeros(1, SLOTS), None, [True], [image.shape[:2]]
        ).blocks[0]
        counts.append(
            len(model.tokenizer.encode(block, add_special_tokens=False))
            if isinstance(block, str)
            else len(block)
        )
    assert max(counts) <= tiling.most_tokens()
    if kind.startswith("llava"):
        assert max(counts) == tiling.most_tokens()
