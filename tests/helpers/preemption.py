"""Something that happens in the middle of a training step, for the exact-resume tests: a
preemption request, or a crash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


def build_model_acting_at(at_forward: int, action: Callable[[], None]) -> Any:
    """``kvideo.model.spec.build_model`` (the one installed now) whose models call ``action`` at
    their ``at_forward``-th training forward, counted over every model it builds. With
    ``grad_accum`` micro-batches per step, forward ``(s - 1) * grad_accum + 1`` is the first one
    of step ``s``. Install it in place of ``build_model``."""
    from kvideo.model import spec

    build, forwards = spec.build_model, [0]

    def act(module: nn.Module, inputs: Any) -> None:
        if module.training:
            forwards[0] += 1
            if forwards[0] == at_forward:
                action()

    def build_model(*args: Any, **kwargs: Any) -> nn.Module:
        model: nn.Module = build(*args, **kwargs)
        model.register_forward_pre_hook(act)
        return model

    return build_model


def preempting_build_model(at_forward: int) -> Any:
    """``build_model_acting_at`` whose action asks for a checkpoint and exit
    (``signals.request_checkpoint_and_exit``)."""
    from kvideo.train import signals

    return build_model_acting_at(at_forward, lambda: signals.request_checkpoint_and_exit("test"))


class InjectedCrash(RuntimeError):
    """The failure a test injects (a bug, a lost device), never one kvideo raises itself."""


def crashing_build_model(at_forward: int) -> Any:
    """``build_model_acting_at`` whose action raises ``InjectedCrash``."""

    def crash() -> None:
        raise InjectedCrash(f"injected at training forward {at_forward}")

    return build_model_acting_at(at_forward, crash)
