"""``data.packing``: a packed batch is the same computation as its samples run one at a time.

For each model family that packs, the per-sample losses and the gradients of a packed batch equal
those of the samples run alone (unpacked, batch of one), with the loss reduced as the trainer
reduces it (mean over the batch's loss tokens), in fp32 on CPU to 1e-5; and changing one sample
moves no other sample's logits. The batches mix text lengths, frame counts, a clip whose frames
all failed, and (conversations) different places for the video, so the rows really share samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from kvideo.config import DataConfig
from kvideo.config.model import ModelConfig
from kvideo.data.tokenizer import IGNORE_INDEX, ByteTokenizer, build_tokenizer
from kvideo.model import build_model
from kvideo.model.packing import balanced_rows, block_causal_mask, pack, pack_layout, unpack
from kvideo.model.pretrained_build import build_pretrained_vlm
from tests.helpers.configs import tiny_hf_model, tiny_model
from tests.helpers.pretrained_vlms import FRAME_SIDE, VLM_TYPES

MAX_FRAMES = 3
TEXT_LEN = 24
Batch = dict[str, torch.Tensor]


def test_rows_are_balanced_whole_samples_and_deterministic() -> None:
    lengths = [30, 5, 12, 30, 7, 18, 2, 20]
    rows = balanced_rows(lengths, 48)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))  # each sample once
    assert len(rows) == 3 and max(sum(lengths[i] for i in row) for row in rows) <= 48
    assert rows == balanced_rows(lengths, 48)
    assert balanced_rows([70, 3], 48) == [[0], [1]]  # a sample longer than a row gets its own


def test_pack_and_unpack_move_real_tokens_only() -> None:
    real = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    layout = pack_layout(real, 5)
    values = torch.arange(15.0).view(3, 5, 1)
    packed = pack(values, layout)
    assert layout.computed == int(real.sum()) + 1 == 8  # rows of 4 and 3 tokens: one end slot
    assert torch.equal(unpack(packed, layout), values * real[..., None])
    mask = block_causal_mask(layout)
    for row in range(layout.rows):
        segment = layout.segment[row]
        for q in range(layout.length):
            allowed = mask[row, 0, q].nonzero().flatten().tolist()
            assert allowed == [k for k in range(q + 1) if segment[k] == segment[q]]


def conversation_batch(
    tokenizer: Any, texts: list[str], frames_valid: list[int], video_at: list[int], *, side: int = 64
) -> Batch:
    """Samples whose text has ``video_at[i]`` tokens before the video (0 = a caption's layout),
    frames ``side`` pixels square."""
    g = torch.Generator().manual_seed(1)
    ids, labels, text_len = [], [], []
    for text in texts:
        row_ids = [*tokenizer.encode("Say:"), *tokenizer.encode(text), tokenizer.stop_ids[0]][:TEXT_LEN]
        row_labels = [IGNORE_INDEX, *row_ids[1:]]
        pad = TEXT_LEN - len(row_ids)
        ids.append(row_ids + [tokenizer.pad_id] * pad)
        labels.append(row_labels + [IGNORE_INDEX] * pad)
        text_len.append(len(row_ids))
    mask = torch.tensor([[i < n for i in range(MAX_FRAMES)] for n in frames_valid])
    return {
        "frames": torch.randn(len(texts), MAX_FRAMES, 3, side, side, generator=g),
        "frame_mask": mask,
        "frame_times": torch.where(mask, torch.arange(MAX_FRAMES) * 0.5, torch.tensor(-1.0)),
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "text_len": torch.tensor(text_len),
        "visual_at": torch.tensor(video_at),
    }


TEXTS = ["a red circle moves left", "up", "a small blue square moves slowly to the right", "no"]
FRAMES_VALID = [3, 1, 2, 0]  # the last clip failed to decode: no frame
VIDEO_AT = [0, 2, 5, 1]


def run(model: nn.Module, data: Batch, *, visual_at: bool) -> dict[str, torch.Tensor]:
    extra = {"visual_at": data["visual_at"]} if visual_at else {}
    out: dict[str, torch.Tensor] = model(
        data["frames"],
        data["frame_mask"],
        data["input_ids"],
        data["labels"],
        frame_times=data["frame_times"],
        text_len=data["text_len"],
        **extra,
    )
    return out


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def assert_packed_equals_one_at_a_time(
    model: Any, data: Batch, row_tokens: int, *, visual_at: bool, grad_scale: bool = False
) -> None:
    """``grad_scale``: gradients to 1e-5 of each weight's largest gradient rather than 1e-5 (the
    tiny random released VLMs' vision gradients reach 1e4, where one float rounding of a sum is
    1e-3)."""
    model.max_tokens_per_row = None
    with torch.no_grad():
        padded = run(model, data, visual_at=visual_at)
    model.max_tokens_per_row = row_tokens
    packed = run(model, data, visual_at=visual_at)
    packed["loss"].backward()
    packed_grads = gradients(model)
    assert packed["computed_tokens"] < padded["computed_tokens"]  # the rows really hold less padding
    assert packed["tokens"] == padded["tokens"]

    model.max_tokens_per_row = None
    total_tokens = packed["ntokens"].sum()
    nll = []
    for i in range(data["input_ids"].shape[0]):
        alone = run(model, {k: v[i : i + 1] for k, v in data.items()}, visual_at=visual_at)
        (alone["nll"].sum() / total_tokens).backward()  # the batch's reduction, summed over samples
        nll.append(alone["nll"][0])
    alone_grads = gradients(model)

    torch.testing.assert_close(packed["nll"], torch.stack(nll), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed["loss"], torch.stack(nll).sum() / total_tokens, rtol=1e-5, atol=1e-5)
    assert packed_grads.keys() == alone_grads.keys() and packed_grads
    for name, grad in packed_grads.items():
        scale = max(1.0, float(alone_grads[name].abs().max())) if grad_scale else 1.0
        torch.testing.assert_close(grad, alone_grads[name], rtol=1e-5, atol=1e-5 * scale, msg=name)


def assert_no_sample_sees_another(model: Any, data: Batch, *, visual_at: bool) -> None:
    """One row holds every sample, sample 0 first: a causal mask alone would let all see it."""
    model.max_tokens_per_row = 10_000
    with torch.no_grad():
        out = run(model, data, visual_at=visual_at)
        assert int(out["computed_tokens"]) == int(out["tokens"])  # one row, no end padding
        before = out["logits"]
        changed = dict(data)
        changed["frames"] = data["frames"].clone()
        changed["frames"][0] += 1.0
        changed["input_ids"] = data["input_ids"].clone()
        changed["input_ids"][0, 1:4] = data["input_ids"][2, 1:4]
        after = run(model, changed, visual_at=visual_at)["logits"]
    assert not torch.allclose(before[0], after[0])  # the change reaches sample 0
    torch.testing.assert_close(before[1:], after[1:], rtol=0, atol=1e-6)


Family = Callable[[], tuple[Any, Any]]


def builtin_family() -> tuple[Any, Any]:
    cfg = tiny_model(patch_size=16, lm_depth=2, max_text_len=TEXT_LEN, max_seq_len=64)
    tokenizer = ByteTokenizer()
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=tokenizer.vocab_size, max_frames=MAX_FRAMES, frame_size=64)
    return model, tokenizer


@pytest.fixture(scope="module")
def hf_family(tiny_hf_parts: tuple[Path, Path]) -> Family:
    vision, lm = tiny_hf_parts

    def build() -> tuple[Any, Any]:
        cfg = tiny_hf_model(vision, lm, max_text_len=TEXT_LEN, attn_implementation="sdpa", freeze=[])
        tokenizer = build_tokenizer(None, cfg)  # type: ignore[arg-type]
        torch.manual_seed(0)
        model = build_model(cfg, vocab_size=tokenizer.vocab_size, max_frames=MAX_FRAMES, frame_size=64)
        return model, tokenizer

    return build


@pytest.mark.parametrize("visual_at", [False, True], ids=["caption", "conversation"])
@pytest.mark.parametrize("row_tokens", [0, 40])
def test_builtin_packed_batch_equals_its_samples_one_at_a_time(visual_at: bool, row_tokens: int) -> None:
    model, tokenizer = builtin_family()
    data = conversation_batch(tokenizer, TEXTS, FRAMES_VALID, VIDEO_AT if visual_at else [0] * 4)
    assert_packed_equals_one_at_a_time(model.train(), data, row_tokens, visual_at=visual_at)
    assert_no_sample_sees_another(model.eval(), data, visual_at=visual_at)


@pytest.mark.parametrize("visual_at", [False, True], ids=["caption", "conversation"])
def test_hf_packed_batch_equals_its_samples_one_at_a_time(hf_family: Family, visual_at: bool) -> None:
    model, tokenizer = hf_family()
    data = conversation_batch(tokenizer, TEXTS, FRAMES_VALID, VIDEO_AT if visual_at else [0] * 4)
    assert_packed_equals_one_at_a_time(model.train(), data, 48, visual_at=visual_at)
    assert_no_sample_sees_another(model.eval(), data, visual_at=visual_at)


@pytest.mark.parametrize("kind", VLM_TYPES)
def test_pretrained_packed_batch_equals_its_samples_one_at_a_time(
    kind: str, tiny_vlms: dict[str, Path]
) -> None:
    """``model=pretrained``: Qwen's multimodal rope positions, the video arguments reordered to
    the rows' sample order, and the families that write a clip's video as text (SmolVLM2,
    InternVL3). LLaVA's models take one frame count per batch (a clip with fewer repeats its
    last frame, unpacked too), so their clips here have equal counts."""
    cfg = ModelConfig(
        name="pretrained", family="pretrained", path=str(tiny_vlms[kind]), max_text_len=TEXT_LEN
    )
    cfg = dataclasses.replace(cfg, freeze=[])
    tokenizer = build_tokenizer(DataConfig(), cfg)
    frames_valid = [MAX_FRAMES] * 4 if kind.startswith("llava") else FRAMES_VALID
    data = conversation_batch(tokenizer, TEXTS, frames_valid, VIDEO_AT, side=2 * FRAME_SIDE[kind])
    model = build_pretrained_vlm(cfg)
    assert_packed_equals_one_at_a_time(model.train(), data, 0, visual_at=True, grad_scale=True)
    assert_no_sample_sees_another(model.eval(), data, visual_at=True)


def test_every_forward_counts_real_and_computed_tokens() -> None:
    model, tokenizer = builtin_family()
    data = conversation_batch(tokenizer, TEXTS, FRAMES_VALID, [0] * 4)
    real = int(data["text_len"].sum()) + sum(FRAMES_VALID) * model.tokens_per_frame
    padded = run(model, data, visual_at=False)
    assert int(padded["tokens"]) == real
    assert int(padded["computed_tokens"]) == 4 * (TEXT_LEN + MAX_FRAMES * model.tokens_per_frame)
    model.max_tokens_per_row = 0
    packed = run(model, data, visual_at=False)
    assert int(packed["tokens"]) == real
    assert real <= int(packed["computed_tokens"]) < int(padded["computed_tokens"])


@pytest.mark.parametrize("family", ["builtin", "hf"])
@pytest.mark.parametrize("visual_at", [False, True], ids=["caption", "conversation"])
def test_candidate_rows_of_one_clip_score_as_their_padded_rows(
    family: str, visual_at: bool, hf_family: Family
) -> None:
    """Scoring (``kvideo.train.evaluate``): candidate captions read their clip's frames through
    ``clip_of_row``, the same NLL as each candidate with its own copy of the frames."""
    model, tokenizer = builtin_family() if family == "builtin" else hf_family()
    texts = ["a red circle", "a blue circle moves", "up", "a green square", "no"]
    data = conversation_batch(tokenizer, texts, [3, 3, 3, 1, 1], [2, 2, 2, 1, 1] if visual_at else [0] * 5)
    clip_of_row = torch.tensor([0, 0, 0, 1, 1])
    clips = {k: data[k][torch.tensor([0, 3])] for k in ("frames", "frame_mask", "frame_times")}
    extra = {"visual_at": data["visual_at"]} if visual_at else {}
    with torch.no_grad():
        shared = model.eval()(
            clips["frames"],
            clips["frame_mask"],
            data["input_ids"],
            data["labels"],
            frame_times=clips["frame_times"],
            text_len=data["text_len"],
            clip_of_row=clip_of_row,
            **extra,
        )
        each = run(model, {**data, **{k: v[clip_of_row] for k, v in clips.items()}}, visual_at=visual_at)
    torch.testing.assert_close(shared["nll"], each["nll"], rtol=1e-5, atol=1e-5)
    if family == "builtin":  # each clip's prefix once: fewer token slots than one row per candidate
        assert int(shared["computed_tokens"]) < int(each["computed_tokens"])
