"""``StepTally``: what one optimizer step's micro-batches add up to, for the reporter's window
(``kvideo.train.metrics.StepTimer``): the loss, the clips and the skipped ones, the real tokens
the model read and the token slots it computed (their ratio is ``token_efficiency``), the time
blocked on the loader, and the step's wall time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from kvideo.train.metrics import now

T = TypeVar("T")


@dataclass(frozen=True)
class StepOutcome:
    """What one optimizer step tells the loop: its learning rate and gradient norm."""

    lr: float
    grad_norm: torch.Tensor


class StepTally:
    """Sums over the micro-batches of one step. The loss and token sums stay tensors on the
    training device, so adding them costs no device-to-host sync inside the step."""

    def __init__(self, device: torch.device) -> None:
        self.started = now()
        self.tokens = torch.zeros((), dtype=torch.long, device=device)
        self.computed_tokens = torch.zeros((), dtype=torch.long, device=device)
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

    def add(self, batch: dict[str, Any], loss: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        """One micro-batch, its (already ``grad_accum``-scaled) loss and the model's output, whose
        ``tokens`` (visual tokens of kept frames plus text before its padding) and
        ``computed_tokens`` every family reports (``kvideo.model.packing.token_counts``)."""
        self.loss_sum += loss.detach().float()
        self.clips += len(batch["skip_reason"])
        self.skipped += sum(1 for reason in batch["skip_reason"] if reason)
        self.tokens += out["tokens"]
        self.computed_tokens += out["computed_tokens"]

    def elapsed(self) -> float:
        """Seconds since the step started."""
        return now() - self.started
