"""Captions for a batch of clips: greedy decoding after the prompt's context, the same
``[visual | context]`` sequence the loss trains (``generate`` of each model family)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

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
) -> list[str]:
    """One caption per clip of ``batch`` (a loader batch: normalized frames on the model's device)."""
    frames = batch["frames"]
    context = torch.tensor([tokenizer.context_ids(prompt)] * frames.shape[0], device=frames.device)
    was_training = model.training
    model.eval()
    try:
        with autocast():
            ids = model.generate(  # type: ignore[operator]
                frames,
                batch["frame_mask"],
                context,
                frame_times=batch["frame_times"],
                max_new_tokens=max_new_tokens,
                stop_ids=tokenizer.stop_ids,
            )
    finally:
        model.train(was_training)
    return [tokenizer.decode(row) for row in ids]
