"""A preemption that arrives in the middle of a training step, for the exact-resume tests."""

from __future__ import annotations

from typing import Any

from torch import nn


def preempting_build_model(at_forward: int) -> Any:
    """``kvideo.model.vlm.build_model`` (the one installed now) whose models ask for a checkpoint
    and exit (``signals.request_checkpoint_and_exit``) at their ``at_forward``-th training forward,
    counted over every model it builds. With ``grad_accum`` micro-batches per step, forward
    ``(s - 1) * grad_accum + 1`` is the first one of step ``s``. Install it in place of
    ``build_model``."""
    from kvideo.model import vlm
    from kvideo.train import signals

    build, forwards = vlm.build_model, [0]

    def preempt(module: nn.Module, inputs: Any) -> None:
        if module.training:
            forwards[0] += 1
            if forwards[0] == at_forward:
                signals.request_checkpoint_and_exit("test")

    def build_model(*args: Any, **kwargs: Any) -> nn.Module:
        model: nn.Module = build(*args, **kwargs)
        model.register_forward_pre_hook(preempt)
        return model

    return build_model
