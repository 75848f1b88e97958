"""Captions (or answers) for a batch of clips: greedy decoding after the context, the same
sequence the loss trains (``generate`` of each model family).

A caption batch's context is the prompt's, after the visual tokens; a conversation batch's is
each sample's conversation up to its last answer (``answer_at``), the video spliced in at
``visual_at``: contexts of several lengths, right-padded, with each row's length
(``context_len``), generated together, each row as it would be alone."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kvideo.data.batch import optional_inputs
from kvideo.data.tokenizer import Tokenizer


@torch.no_grad()
def caption_batch(
    model: nn.Module,
    batch: dict[str, Any],
    tokenizer: Tokenizer,
    *,
    prompt: str,
    max_new_tokens: int,
    autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    synced: bool = False,
) -> list[str]:
    """One caption (or answer) per clip of ``batch`` (a loader batch: normalized frames on the
    model's device). ``synced``: every rank of an FSDP model captions the same batch, and
    all run the same forwards (the models' ``generate(synced=True)``)."""
    frames = batch["frames"]
    was_training = model.training
    model.eval()
    try:
        with autocast():
            if "answer_at" not in batch:
                # An empty context (no BOS, no template, no prompt) is valid: the answer then
                # follows the visual tokens directly. ``dtype`` keeps it an id tensor.
                context = torch.tensor(
                    [tokenizer.context_ids(prompt)] * frames.shape[0], dtype=torch.long, device=frames.device
                )
                ids = _generate(model, batch, context, max_new_tokens, tokenizer.stop_ids, synced)
            else:
                answer_at = batch["answer_at"].to(frames.device)
                context = batch["input_ids"][:, : int(answer_at.max())].to(frames.device)
                ids = _generate(
                    model,
                    batch,
                    context,
                    max_new_tokens,
                    tokenizer.stop_ids,
                    synced,
                    context_len=answer_at,
                )
    finally:
        model.train(was_training)
    return [tokenizer.decode(row) for row in ids]


def _generate(
    model: nn.Module,
    batch: dict[str, Any],
    context: torch.Tensor,
    max_new_tokens: int,
    stop_ids: list[int],
    synced: bool,
    **extra: torch.Tensor,
) -> list[list[int]]:
    ids: list[list[int]] = model.generate(  # type: ignore[operator]
        batch["frames"],
        batch["frame_mask"],
        context,
        frame_times=batch["frame_times"],
        **optional_inputs(batch),
        **extra,
        max_new_tokens=max_new_tokens,
        stop_ids=stop_ids,
        synced=synced,
    )
    return ids


def until_eos(ids: list[int], stop_ids: list[int]) -> list[int]:
    """The generated ids before the first stop id (EOS, or the chat template's end of turn)."""
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids
