"""``StepTally``: what one optimizer step's micro-batches add up to, for the reporter's window
(``kvideo.train.metrics.StepTimer``): the loss, the clips and the skipped ones, the tokens the
model read, the time blocked on the loader, and the step's wall time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from kvideo.train.metrics import now

T = TypeVar("T")


class StepTally:
    """Sums over the micro-batches of one step. The loss and token sums stay tensors on the
    training device, so adding them costs no device-to-host sync inside the step."""

    def __init__(self, device: torch.device, tokens_per_frame: int, pad_id: int | None) -> None:
        self.started = now()
        self.tokens_per_frame, self.pad_id = tokens_per_frame, pad_id
        self.tokens = torch.zeros((), dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.clips = 0
        self.skipped = 0
        self.wait_s = 0.0

    def timed(self, next_batch: Callable[[], T]) -> T:
        """``next_batch()``, its time counted as waiting for data."""
        t0 = now()
        batch = next_batch()
        self.wait_s += now() - t0
        return batch

    def add(self, batch: dict[str, Any], loss: torch.Tensor) -> None:
        """One micro-batch and its (already ``grad_accum``-scaled) loss. Tokens are the kept
        frames' visual tokens plus the text that is not padding."""
        self.loss_sum += loss.detach().float()
        self.clips += len(batch["skip_reason"])
        self.skipped += sum(1 for reason in batch["skip_reason"] if reason)
        ids = batch["input_ids"]
        text = ids != self.pad_id if self.pad_id is not None else torch.ones_like(ids)
        self.tokens += batch["frame_mask"].sum() * self.tokens_per_frame + text.sum()

    def elapsed(self) -> float:
        """Seconds since the step started."""
        return now() - self.started
