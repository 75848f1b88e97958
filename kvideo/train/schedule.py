"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``.

A ``LambdaLR`` over a *plain function* on purpose: ``LambdaLR.state_dict`` stores the
``__dict__`` of callable objects but skips functions, so a resumed run always takes the
schedule's shape from the current config (e.g. a larger ``trainer.max_steps`` extends the
cosine), while ``last_epoch`` (the step counter) still round-trips through the checkpoint.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base lr used by optimizer step ``step`` (0-based).

    Warmup reaches the full lr at the *last* warmup step (``(step + 1) / warmup``), so step 0
    never trains at lr 0 (a wasted step). The cosine then runs from 1 at the first post-warmup
    step down to ``min_lr_ratio`` at ``max_steps - 1`` and stays there if training goes on.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cosine


def build_scheduler(
    optimizer: Optimizer, *, warmup_steps: int, max_steps: int, min_lr_ratio: float
) -> LambdaLR:
    """Warmup + cosine ``LambdaLR``; call ``scheduler.step()`` once per optimizer step."""

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=warmup_steps, max_steps=max_steps, min_lr_ratio=min_lr_ratio)

    return LambdaLR(optimizer, factor)
