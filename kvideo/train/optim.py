"""The weight update: AdamW over decay/no-decay groups, the lr schedule, gradient clipping.

One component because these three change together and are saved together: the optimizer's
moments, the scheduler's step counter and the clip threshold make one optimizer step, and a
resume must restore the first two as a pair. The schedule's shape lives in ``schedule.py``
(a pure function, tested on its own); this module only wires it to the optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kvideo.config import TrainerConfig
from kvideo.train.schedule import build_scheduler

# Modules whose ``weight`` is a matrix that weight decay should shrink. Everything else
# (biases, norm scales, nn.Embedding tables, free nn.Parameters such as position tables
# and class tokens) is excluded: decaying those pulls embeddings and norm gains towards 0,
# which only hurts.
_DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)

# AdamW's beta2 below the 0.999 default: the second-moment estimate then forgets a loss
# spike within ~20 steps instead of ~1000 (the usual choice for transformer LMs).
_ADAM_BETAS = (0.9, 0.95)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on Linear/Conv weight matrices only. Tied parameters appear once."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_matrix = param.ndim >= 2 and name.endswith("weight")
            (decay if is_matrix and isinstance(module, _DECAYED_MODULES) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class ScheduledOptimizer:
    """AdamW stepped together with its warmup + cosine schedule, gradients clipped first.

    ``optimizer`` and ``scheduler`` are public because the checkpoint stores their states
    under their own keys.
    """

    def __init__(self, model: nn.Module, trainer: TrainerConfig, *, fused: bool) -> None:
        self.model = model
        self.grad_clip = trainer.grad_clip
        self.optimizer = torch.optim.AdamW(
            param_groups(model, trainer.weight_decay), lr=trainer.lr, betas=_ADAM_BETAS, fused=fused
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            warmup_steps=trainer.warmup_steps,
            max_steps=trainer.max_steps,
            min_lr_ratio=trainer.min_lr_ratio,
        )

    def apply_gradients(self) -> tuple[float, torch.Tensor | None]:
        """Clip, step the weights and the schedule, clear the gradients.

        Returns the lr this step used (read before the schedule moves on) and the gradient
        norm before clipping (``None`` when ``trainer.grad_clip`` is 0).
        """
        grad_norm = None
        if self.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr, grad_norm

    def discard_gradients(self) -> None:
        """Drop the accumulated gradients without touching the weights (a step that must not count)."""
        self.optimizer.zero_grad(set_to_none=True)
