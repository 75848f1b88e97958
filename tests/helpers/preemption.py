"""Something that happens in the middle of a training step, for the exact-resume tests: a
preemption request, or a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
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


_KILLED_CHILD = """
import os, signal, sys
from omegaconf import OmegaConf
from kvideo.config import config_from
from kvideo.model import spec
from kvideo.train import train
from tests.helpers.preemption import build_model_acting_at

cfg_path, run_dir, at_forward = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec.build_model = build_model_acting_at(at_forward, lambda: os.kill(os.getpid(), signal.SIGKILL))
train(config_from(OmegaConf.load(cfg_path)), run_dir)
"""


def train_killed_at(cfg: Any, run_dir: Path, at_forward: int, env: dict[str, str] | None = None) -> None:
    """Train ``cfg`` into ``run_dir`` in a child process that is SIGKILLed (no clean-up) at its
    ``at_forward``-th training forward; ``env`` is added to the child's environment."""
    from omegaconf import OmegaConf

    from tests.helpers.paths import REPO

    cfg_path = run_dir.parent / f"{run_dir.name}.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(cfg_path), str(run_dir), str(at_forward)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]


def train_losses(run_dir: Path) -> dict[int, float]:
    """``{step: loss}`` of a run's training windows in ``metrics.jsonl``."""
    from kvideo.train.metrics import read_jsonl

    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r}


def assert_resumed_exactly(run_dir: Path, reference: Path, steps: int) -> None:
    """The resumed run logged every step once, each with the uninterrupted run's loss."""
    import pytest

    got, want = train_losses(run_dir), train_losses(reference)
    assert sorted(got) == list(range(1, steps + 1))
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, abs=1e-5), step
