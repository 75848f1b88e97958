"""The weight update: AdamW over decay/no-decay groups, the lr schedule, gradient clipping.

One component because these three change together and are saved together: the optimizer's
moments, the scheduler's step counter and the clip threshold make one optimizer step, and a
resume must restore the first two as a pair. The schedule's shape lives in ``schedule.py``
(a pure function, tested on its own); this module only wires it to the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from kvideo.config import TrainerConfig
from kvideo.model.spec import first_component
from kvideo.train.schedule import build_scheduler

# Modules whose ``weight`` is a matrix that weight decay should shrink. Everything else
# (biases, norm scales, nn.Embedding tables, free nn.Parameters such as position tables
# and class tokens) is excluded: decaying those pulls embeddings and norm gains towards 0,
# which only hurts.
_DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)

# AdamW's beta2 below the 0.999 default: the second-moment estimate then forgets a loss
# spike within ~20 steps instead of ~1000 (the usual choice for transformer LMs).
_ADAM_BETAS = (0.9, 0.95)


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    include: Collection[str] | None = None,
    lr_of_part: Callable[[str], float] | None = None,
    part_of: Callable[[str], str] = first_component,
) -> list[dict[str, Any]]:
    """AdamW groups: decay on Linear/Conv weight matrices only. Tied parameters appear once.

    ``include``: the parameter names to optimize (default: those with ``requires_grad``);
    a frozen-now parameter that a later freeze stage trains belongs here, and AdamW leaves it
    untouched while its gradient is ``None``. ``lr_of_part``: one decay / no-decay pair per
    part (``part_of`` a name: ``vision``, ``projector``, ``lm``; the model family's
    ``ModelSpec.part_of``), each at its lr; without it, two groups at the optimizer's lr.
    """
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            wanted = param.requires_grad if include is None else full in include
            if not wanted or id(param) in seen:
                continue
            seen.add(id(param))
            part = part_of(full) if lr_of_part is not None else ""
            is_matrix = param.ndim >= 2 and name.endswith("weight")
            groups.setdefault((part, is_matrix and isinstance(module, _DECAYED_MODULES)), []).append(param)
    if lr_of_part is None:
        return [
            {"params": groups.get(("", True), []), "weight_decay": weight_decay},
            {"params": groups.get(("", False), []), "weight_decay": 0.0},
        ]
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decay else 0.0,
            "lr": lr_of_part(part),
            "name": f"{part}/{'decay' if decay else 'no_decay'}",
        }
        for (part, decay), params in sorted(groups.items())
    ]


class ScheduledOptimizer:
    """AdamW stepped together with its warmup + cosine schedule, gradients clipped first.

    ``optimizer`` and ``scheduler`` are public because the checkpoint stores their states
    under their own keys.
    """

    def __init__(
        self,
        model: nn.Module,
        trainer: TrainerConfig,
        *,
        fused: bool,
        include: Collection[str] | None = None,
        lr_of_part: Callable[[str], float] | None = None,
        part_of: Callable[[str], str] = first_component,
    ) -> None:
        self.model = model
        self.grad_clip = trainer.grad_clip
        self.base_lr = trainer.lr
        groups = param_groups(
            model, trainer.weight_decay, include=include, lr_of_part=lr_of_part, part_of=part_of
        )
        self.optimizer = torch.optim.AdamW(groups, lr=trainer.lr, betas=_ADAM_BETAS, fused=fused)
        self.scheduler = build_scheduler(
            self.optimizer,
            warmup_steps=trainer.warmup_steps,
            max_steps=trainer.max_steps,
            min_lr_ratio=trainer.min_lr_ratio,
        )

    def gradient_norm(self) -> torch.Tensor:
        """The L2 norm of every gradient, the same number on every rank: DDP's gradients are
        already all-reduced, and the norms of FSDP's gradient shards are summed over the ranks
        here (a ``DTensor`` made whole). Non-finite when any rank's loss was."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        return norm

    def apply_gradients(self, grad_norm: torch.Tensor) -> float:
        """Clip to ``trainer.grad_clip`` (``grad_norm`` from ``gradient_norm``), step the weights
        and the schedule, clear the gradients.

        Returns ``trainer.lr`` times the schedule's factor for this step (parts with their own
        lr scale the same way).
        """
        if self.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), self.grad_clip, grad_norm)
        lr = self.base_lr * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def discard_gradients(self) -> None:
        """Drop the accumulated gradients without touching the weights (a step that must not count)."""
        self.optimizer.zero_grad(set_to_none=True)
