"""Generation in validation is batched: a conversation batch's answers, generated together from
contexts of several lengths (right-padded, with ``context_len``), are each what its row generates
alone. For every model family, and for each released VLM ``model=pretrained`` takes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import DataConfig, ModelConfig
from kvideo.data.tokenizer import build_tokenizer, encode_caption
from kvideo.model import build_model
from kvideo.model.pretrained_build import build_pretrained_vlm
from tests.helpers.configs import tiny_hf_model, tiny_model
from tests.helpers.pretrained_vlms import FRAME_SIDE, VLM_TYPES

NEW_TOKENS = 5


def clips(batch: int, size: int, valid: list[int]) -> dict[str, torch.Tensor]:
    mask = torch.tensor([[i < n for i in range(4)] for n in valid])
    return {
        "frames": torch.randn(batch, 4, 3, size, size, generator=torch.Generator().manual_seed(5)),
        "frame_mask": mask,
        "frame_times": torch.where(mask, torch.arange(4) * 0.5, torch.tensor(-1.0)),
    }


def together_and_alone(
    model: Any, data: dict[str, torch.Tensor], context: torch.Tensor, lengths: list[int], visual_at: list[int]
) -> tuple[list[list[int]], list[list[int]]]:
    def generate(rows: slice, ids: torch.Tensor, **extra: Any) -> list[list[int]]:
        out: list[list[int]] = model.generate(
            data["frames"][rows],
            data["frame_mask"][rows],
            ids,
            frame_times=data["frame_times"][rows],
            visual_at=torch.tensor(visual_at)[rows],
            max_new_tokens=NEW_TOKENS,
            stop_ids=[-1],  # never met: every row generates NEW_TOKENS
            **extra,
        )
        return out

    together = generate(slice(None), context, context_len=torch.tensor(lengths))
    alone = [generate(slice(b, b + 1), context[b : b + 1, :n])[0] for b, n in enumerate(lengths)]
    return together, alone


def context_sensitive(model: Any) -> Any:
    """``model`` with every weight drawn again at std 0.3: at their init, tiny random LMs repeat a
    context's last token whatever came before it, which would hide a row that sees another
    row's padding; larger weights make the greedy answer depend on the whole context."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return model.eval()


def random_contexts(vocab: int, lengths: list[int]) -> torch.Tensor:
    ids = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(3))
    for b, n in enumerate(lengths):
        ids[b, n:] = 0  # right padding: never read
    return ids


def assert_each_rows_own_answer(model: Any, *, side: int, vocab: int) -> None:
    """Three clips of 4, 2 and 0 frames with contexts of 7, 3 and 5 ids (the video at 2, 1 and 0):
    generated together, each row's answer is the one it gets alone, and the answers differ."""
    together, alone = together_and_alone(
        context_sensitive(model),
        clips(3, side, [4, 2, 0]),
        random_contexts(vocab, [7, 3, 5]),
        [7, 3, 5],
        [2, 1, 0],
    )
    assert together == alone and all(len(row) == NEW_TOKENS for row in together)
    assert len({tuple(row) for row in together}) > 1  # the answers depend on the context


def test_builtin_batched_generation_is_each_rows_own() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model(patch_size=8, lm_depth=2), vocab_size=40, max_frames=4, frame_size=16)
    assert_each_rows_own_answer(model, side=16, vocab=40)


def test_hf_batched_generation_is_each_rows_own(tiny_hf_parts: tuple[Path, Path]) -> None:
    cfg = tiny_hf_model(*tiny_hf_parts, max_text_len=12)
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=256, max_frames=4, frame_size=64)
    assert_each_rows_own_answer(model, side=64, vocab=256)


@pytest.mark.parametrize("kind", VLM_TYPES)
def test_pretrained_batched_generation_is_each_rows_own(kind: str, tiny_vlms: dict[str, Path]) -> None:
    cfg = ModelConfig(name="pretrained", family="pretrained", path=str(tiny_vlms[kind]), max_text_len=40)
    cfg = dataclasses.replace(cfg, max_seq_len=32768)
    torch.manual_seed(0)
    model = context_sensitive(build_pretrained_vlm(cfg))
    tokenizer = build_tokenizer(DataConfig(), cfg)
    prompts = ["Describe the video in detail, please.", "What?"]
    encoded = [encode_caption(tokenizer, prompt, "a ball", 40) for prompt in prompts]
    lengths = [e.answer_at for e in encoded]
    context = torch.tensor([e.input_ids[: max(lengths)] for e in encoded])
    assert lengths[0] > lengths[1]
    # LLaVA's video input has one frame count per batch (a shorter clip repeats its last frame),
    # so only clips of equal length are the same input together and alone
    valid = [3, 3] if kind.startswith("llava") else [3, 1]
    together, alone = together_and_alone(
        model, clips(2, 2 * FRAME_SIDE[kind], valid), context, lengths, [e.visual_at for e in encoded]
    )
    assert together == alone and all(len(row) == NEW_TOKENS for row in together)
    assert len({tuple(row) for row in together}) > 1  # the answers depend on the context
