"""Checkpoints: atomic writes, corruption fallback, and a full round trip of every state."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from kvideo.train import checkpoint as ckpt
from kvideo.train.schedule import build_scheduler

pytestmark = pytest.mark.slow  # trains a model


def _model_and_optim(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, LambdaLR]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = build_scheduler(optim, warmup_steps=2, max_steps=10, min_lr_ratio=0.1)
    return model, optim, sched


def _train(model: nn.Module, optim: torch.optim.Optimizer, sched, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        optim.step()
        sched.step()
        optim.zero_grad()


def _state(model, optim, sched, step: int) -> dict:
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optim.state_dict(),
        "scheduler": sched.state_dict(),
        "data": {"epoch": 1, "samples_in_epoch": 12, "world_size": 1},
        "ranks": [{"rng": ckpt.capture_rng_state(), "skipped": {"missing": 2}}],
    }


def test_rng_round_trip() -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leave a cached gaussian in numpy's state
    state = ckpt.capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    ckpt.restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


def test_round_trip_all_states(tmp_path: Path) -> None:
    model, optim, sched = _model_and_optim()
    _train(model, optim, sched, 3)
    torch.manual_seed(123)
    saved = _state(model, optim, sched, step=3)
    ckpt.save_checkpoint(tmp_path, saved)
    expected_next = torch.rand(5)  # what the RNG gives right after the save

    found = ckpt.load_latest(tmp_path)
    assert found is not None
    state, path = found
    assert path.name == "last.pt"
    model2, optim2, sched2 = _model_and_optim(seed=99)
    model2.load_state_dict(state["model"])
    optim2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == sched.get_last_lr()
    assert state["data"] == saved["data"] and state["step"] == 3
    assert state["ranks"][0]["skipped"] == {"missing": 2}
    ckpt.restore_rng_state(state["ranks"][0]["rng"])
    assert torch.equal(torch.rand(5), expected_next)

    # Continuing both copies gives identical weights: optimizer moments came along.
    torch.manual_seed(7)
    _train(model, optim, sched, 2)
    torch.manual_seed(7)
    _train(model2, optim2, sched2, 2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_save_goes_through_tmp_and_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    model, optim, sched = _model_and_optim()
    ckpt.save_checkpoint(tmp_path, _state(model, optim, sched, step=5), keep=1)
    assert calls == [("ckpt.tmp", "last.pt"), ("ckpt.tmp", "step_000005.pt")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_000005.pt"]


def _latest(ckpt_dir: Path) -> tuple[dict[str, Any], Path]:
    found = ckpt.load_latest(ckpt_dir)
    assert found is not None, f"no usable checkpoint in {ckpt_dir}"
    return found


def test_failed_save_keeps_previous_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, optim, sched = _model_and_optim()
    ckpt.save_checkpoint(tmp_path, _state(model, optim, sched, step=1))

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # what a kill mid-write leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, _state(model, optim, sched, step=2))
    monkeypatch.undo()
    state, path = _latest(tmp_path)
    assert path.name == "last.pt" and state["step"] == 1


def test_corrupt_last_falls_back_to_step_copy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, optim, sched = _model_and_optim()
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, _state(model, optim, sched, step=step), keep=2)
    assert [s for s, _ in ckpt.list_step_checkpoints(tmp_path)] == [6, 4]  # pruned to keep=2
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        state, path = _latest(tmp_path)
    assert path.name == "step_000006.pt" and state["step"] == 6
    assert "falling back" in caplog.text

    # Truncate the newest copy too: the one before it is used.
    data = (tmp_path / "step_000006.pt").read_bytes()
    (tmp_path / "step_000006.pt").write_bytes(data[: len(data) // 2])
    state, path = _latest(tmp_path)
    assert state["step"] == 4

    (tmp_path / "step_000004.pt").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="no usable checkpoint"):
        ckpt.load_latest(tmp_path)


def test_tmp_file_is_never_read(tmp_path: Path) -> None:
    assert ckpt.load_latest(tmp_path) is None
    (tmp_path / "ckpt.tmp").write_bytes(b"partial")
    assert ckpt.load_latest(tmp_path) is None


def test_incomplete_checkpoint_is_rejected(tmp_path: Path) -> None:
    torch.save({"format": ckpt.FORMAT_VERSION, "step": 1}, tmp_path / "last.pt")
    with pytest.raises(ckpt.CheckpointError, match="missing keys"):
        ckpt.load_latest(tmp_path)


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from kvideo.train.checkpoint import save_checkpoint
    d = Path(sys.argv[1])
    big = torch.randn(4_000_000)  # 16 MB: each save takes a while, so kills land mid-write
    step = 0
    while True:
        step += 1
        save_checkpoint(d, {"step": step, "model": {"w": big + step}, "optimizer": {}, "scheduler": {},
                            "data": {}, "ranks": []}, keep=1)
        print(step, flush=True)
    """
)


def test_sigkill_during_saves_never_leaves_a_torn_last(tmp_path: Path) -> None:
    """Kill a process that saves in a loop at arbitrary moments: last.pt always loads."""
    for attempt in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # at least one complete save
            time.sleep(0.05 + 0.1 * attempt)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state, path = _latest(tmp_path)
        assert path.name == "last.pt"
        assert abs(float(state["model"]["w"].mean()) - state["step"]) < 0.01
