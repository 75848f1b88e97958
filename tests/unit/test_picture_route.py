"""A picture takes a released Qwen VLM's image route (``kvideo.model.qwen_inputs``): the logits of
kvideo's forward are those of the model fed as Qwen's processor feeds a picture (its image
processor's ``pixel_values`` / ``image_grid_thw``, one ``<|image_pad|>`` per merged patch between
the vision markers, modality 1), and a record of a picture and a video gives each its own route."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kvideo.data.preprocess import normalize_frames, pixel_statistics
from kvideo.data.tokenizer import IGNORE_INDEX, build_tokenizer, encode_caption
from kvideo.model.pretrained_build import build_pretrained_vlm
from tests.helpers.pretrained_vlms import FRAME_SIDE, QWEN_TYPES
from tests.unit.test_pretrained_vlm import config

TEXT_LEN = 40


def picture_batch(folder: Path, kind: str) -> tuple[Any, dict[str, Any], np.ndarray]:
    """A caption of one picture as the loader gives it: its frame first of 4 slots, at time 0."""
    side = 2 * FRAME_SIDE[kind]
    cfg = config(folder, video={"frame_size": side})
    tokenizer = build_tokenizer(cfg.data, cfg.model)
    text = encode_caption(tokenizer, "Describe the image.", "a red ball", TEXT_LEN)
    image = np.random.default_rng(0).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    frames = torch.zeros(1, 4, 3, side, side)
    frames[0, 0] = normalize_frames(torch.from_numpy(image), statistics=pixel_statistics(cfg.model))
    batch = {
        "frames": frames,
        "frame_mask": torch.tensor([[True, False, False, False]]),
        "frame_times": torch.tensor([[0.0, -1.0, -1.0, -1.0]]),
        "input_ids": torch.tensor([text.input_ids]),
        "labels": torch.tensor([text.labels]),
        "visual_at": torch.tensor([text.visual_at]),
        "picture": torch.tensor([True]),
    }
    return cfg, batch, image


@pytest.mark.parametrize("kind", QWEN_TYPES)
def test_a_picture_is_fed_as_the_models_processor_feeds_it(kind: str, tiny_vlms: dict[str, Path]) -> None:
    from transformers import AutoImageProcessor

    folder = tiny_vlms[kind]
    cfg, batch, image = picture_batch(folder, kind)
    model = build_pretrained_vlm(cfg.model).eval()
    theirs = AutoImageProcessor.from_pretrained(folder)(images=[image], do_resize=False, return_tensors="pt")
    hf = model.hf.config
    count = int(theirs["image_grid_thw"].prod()) // model.geometry.merge_size**2
    at = int(batch["visual_at"][0])
    ids = batch["input_ids"][0].tolist()
    block = [hf.vision_start_token_id, *[hf.image_token_id] * count, hf.vision_end_token_id]
    reference_ids = torch.tensor([ids[:at] + block + ids[at:]])
    with torch.no_grad():
        reference = model.hf(
            input_ids=reference_ids,
            attention_mask=torch.ones_like(reference_ids),
            mm_token_type_ids=(reference_ids == hf.image_token_id).to(torch.int32),
            pixel_values=theirs["pixel_values"],
            image_grid_thw=theirs["image_grid_thw"],
            use_cache=False,
        ).logits
        ours = model(
            **{k: v for k, v in batch.items() if k not in ("frames", "frame_mask", "input_ids")},
            frames=batch["frames"],
            frame_mask=batch["frame_mask"],
            input_ids=batch["input_ids"],
        )
    torch.testing.assert_close(ours["logits"], reference, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(ours["loss"])


def test_a_record_of_a_picture_and_a_video_gives_each_its_own_route(tiny_vlms: dict[str, Path]) -> None:
    """Qwen3-VL: the picture's block has no time text, the video's has one per temporal patch;
    packed as padded (the image and video arguments reordered clip by clip)."""
    cfg, batch, _ = picture_batch(tiny_vlms["qwen3_vl"], "qwen3_vl")
    model = build_pretrained_vlm(cfg.model).eval()
    video = torch.randn(1, 4, *batch["frames"].shape[2:], generator=torch.Generator().manual_seed(1))
    two = {
        **batch,
        "frames": torch.cat([batch["frames"], video], dim=1).expand(2, -1, -1, -1, -1),
        "frame_mask": torch.cat([batch["frame_mask"], torch.ones(1, 4, dtype=torch.bool)], dim=1).expand(
            2, -1
        ),
        "frame_times": torch.cat([batch["frame_times"], torch.arange(4.0)[None] * 0.5], dim=1).expand(2, -1),
        "input_ids": batch["input_ids"].expand(2, -1),
        "labels": batch["labels"].expand(2, -1),
        "visual_at": torch.tensor([[int(batch["visual_at"][0])] * 2, [int(batch["visual_at"][0]), TEXT_LEN]]),
        "picture": torch.tensor([[True, False], [True, False]]),
    }
    inputs = model.video_inputs(
        two["frames"][0].view(2, 4, *video.shape[2:]),
        two["frame_mask"][0].view(2, 4),
        two["frame_times"][0].view(2, 4),
        None,
        [True, False],
    )
    assert set(inputs.kwargs) == {"pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"}
    texts = [model.tokenizer.decode(block) for block in inputs.blocks]
    assert "seconds" not in texts[0] and texts[1].count("seconds") == 2
    with torch.no_grad():
        padded = model(**two)
        model.max_tokens_per_row = 0
        packed = model(**two)
    torch.testing.assert_close(packed["nll"], padded["nll"], rtol=1e-5, atol=1e-5)
    assert not torch.equal(padded["nll"][0], padded["nll"][1])  # row 1 never sees the video
    assert (two["labels"] != IGNORE_INDEX).any()


def test_an_internvl_picture_is_its_image_text_around_the_one_tile_its_processor_cuts(
    tiny_vlms: dict[str, Path],
) -> None:
    """InternVL3's processor cuts a square picture of the tower's size into one tile (no
    thumbnail) and writes ``<img>`` + ``<IMG_CONTEXT>`` per token + ``</img>`` where the picture
    is: kvideo's logits are the model's fed that way, with the image processor's pixels."""
    from transformers import AutoImageProcessor

    folder = tiny_vlms["internvl"]
    cfg, batch, image = picture_batch(folder, "internvl")
    model = build_pretrained_vlm(cfg.model).eval()
    theirs = AutoImageProcessor.from_pretrained(folder)(images=[image], return_tensors="pt")
    assert theirs["num_patches"].tolist() == [1]
    tokenizer, at = model.tokenizer, int(batch["visual_at"][0])
    ids = batch["input_ids"][0].tolist()
    text = "<img>" + "<IMG_CONTEXT>" * model.geometry.tokens_per_frame + "</img>"
    decode = partial(tokenizer.decode, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    rendered = decode(ids[:at]) + text + decode(ids[at:])
    reference_ids = torch.tensor([tokenizer.encode(rendered, add_special_tokens=False)])
    with torch.no_grad():
        reference = model.hf(
            input_ids=reference_ids, pixel_values=theirs["pixel_values"], use_cache=False
        ).logits
        ours = model(
            batch["frames"],
            batch["frame_mask"],
            batch["input_ids"],
            batch["labels"],
            frame_times=batch["frame_times"],
            visual_at=batch["visual_at"],
            picture=batch["picture"],
        )
    torch.testing.assert_close(ours["logits"][:, : reference.shape[1]], reference, rtol=1e-4, atol=1e-4)
