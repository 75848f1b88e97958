"""Runs that cannot learn stop and say so, and two runs never share a run dir.

Real training on a tiny generated sample corpus: a non-finite loss, a dataset whose samples
are all skipped, a prompt that leaves no room for the caption, a run dir held by another
live process, a checkpoint on a full disk (a real, tiny tmpfs), and what the CLI prints.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import KVideoConfig
from kvideo.data.settings import ClipSettings
from kvideo.train import train
from kvideo.train.checkpoint import (
    CheckpointWriteError,
    checkpoint_dir,
    read_checkpoint,
    save_checkpoint,
)
from kvideo.train.guards import RunDirBusy, RunDirLock, RunFailed, SkipBudget, write_failed
from tests.helpers.cli import run_train
from tests.helpers.configs import tiny_cli_run, tiny_config
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow  # trains a model


def tiny(data_root: Path, *, lr: float = 2e-3, prompt: str = "", **trainer: Any) -> KVideoConfig:
    """``tiny_config`` stepping once per batch, checkpointing every step, no validation."""
    options: dict[str, Any] = dict(
        max_steps=6, grad_accum=1, lr=lr, warmup_steps=1, ckpt_every=1, val_every=0, seed=0, grad_clip=0.0
    )
    return tiny_config(data_root, prompt=prompt, **{**options, **trainer})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kvideo.data.loader import build_dataset
    from kvideo.data.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("corpus")
    cfg = tiny(root)
    build_dataset(ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data))  # generates it
    return root


# ----------------------------------------------------------------------------- non-finite loss


def test_non_finite_loss_fails_the_run_and_keeps_the_last_good_checkpoint(
    corpus: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RunFailed, match=r"non-finite loss .* at step (\d+)") as info:
        train(tiny(corpus, lr=1e9, max_steps=20), run_dir)
    failed_at = int(info.value.args[0].split("at step ")[1].split(":")[0])
    assert failed_at > 1  # step 1 is finite; the 1e9 update makes the next ones explode
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["status"] == "failed" and "non-finite loss" in failed["error"]
    assert not (run_dir / "final.json").exists()
    state = read_checkpoint(checkpoint_dir(run_dir) / "last.pt")
    assert state["step"] == failed_at - 1  # the step before: nothing non-finite was saved
    assert all(torch.isfinite(t).all() for t in state["model"].values())


# ----------------------------------------------------------------------------- skipped samples


def test_skip_budget_judges_full_windows_only() -> None:
    budget = SkipBudget(0.5, min_samples=64)
    budget.add(8, 8, step=1)  # one all-bad batch: not a verdict yet
    budget.add(56, 20, step=8)  # 28 / 64 = 44%: fine, window resets
    with pytest.raises(
        RunFailed, match=r"40 of the last 64 samples were skipped \(62% > data.max_skip_fraction"
    ):
        budget.add(64, 40, step=16)
    SkipBudget(1.0).add(64, 64, step=1)  # 1 disables it
    with pytest.raises(RunFailed):
        SkipBudget(0.5).add(4, 4, step=2, last=True)  # the run's end judges what it has


def test_a_run_whose_samples_are_all_skipped_fails(corpus: Path, tmp_path: Path) -> None:
    from kvideo.data.loader import build_dataset
    from kvideo.data.tokenizer import build_tokenizer

    cfg = tiny(corpus)
    rows = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data)).rows
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("".join(r.path + "\n" for r in rows))
    cfg.data.blocklist = str(blocklist)
    cfg.trainer.max_steps = 40
    run_dir = tmp_path / "run"
    with pytest.raises(
        RunFailed, match=r"of the last \d+ samples were skipped \(100% > data.max_skip_fraction"
    ):
        train(cfg, run_dir)
    assert json.loads((run_dir / "failed.json").read_text())["status"] == "failed"
    assert not (run_dir / "final.json").exists()


# ----------------------------------------------------------------------------- prompt


def test_a_prompt_that_leaves_no_room_for_the_caption_is_refused_at_compose_time(corpus: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"its context \(BOS \+ prompt, or the chat template's user turn\) is 40 tokens \(byte-level\) "
        r"of model.max_text_len \(40\)",
    ):
        tiny(corpus, prompt="x" * 39)
    tiny(corpus, prompt="x" * 38)  # one caption token still fits


# ----------------------------------------------------------------------------- run-dir lock

_HOLD = textwrap.dedent(
    """
    import sys, time
    from kvideo.train.guards import RunDirLock
    with RunDirLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_a_second_run_in_a_held_run_dir_refuses_naming_the_holder(corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=rf"is in use by another run \(pid {holder.pid} on "):
            train(tiny(corpus, max_steps=2), run_dir)
        assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # The holder died without cleaning up: its lock went with it.
    assert train(tiny(corpus, max_steps=2), run_dir)["status"] == "completed"
    with RunDirLock(run_dir), pytest.raises(RunDirBusy), RunDirLock(run_dir):
        pass  # two holders in one process conflict too (one per open file)


# ----------------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real filesystem of ``size`` bytes (tmpfs); skipped where mounting is not allowed."""
    mounts: list[Path] = []

    def make(size: int) -> Path:
        mount = tmp_path / f"disk{len(mounts)}"
        mount.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounts.append(mount)
        return mount

    yield make
    for mount in mounts:
        subprocess.run(["umount", str(mount)], check=False)


def _state(megabytes: int, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "model": {"w": torch.zeros(megabytes << 18)},
        "optimizer": {},
        "scheduler": {},
        "data": {},
        "ranks": [],
    }


def test_a_full_disk_names_itself_removes_the_partial_file_and_keeps_the_old_checkpoint(small_disk) -> None:
    disk = small_disk(3 << 20)
    ckpt = disk / "checkpoints"
    save_checkpoint(ckpt, _state(1, step=1), keep=0)
    with pytest.raises(
        CheckpointWriteError,
        match=rf"no space left on {ckpt} writing last.pt: .* MiB free; "
        "the previous checkpoint is intact",
    ):
        save_checkpoint(ckpt, _state(4, step=2), keep=0)
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt"]  # no ckpt.tmp left behind
    assert read_checkpoint(ckpt / "last.pt")["step"] == 1


def test_training_on_a_full_disk_fails_clean(corpus: Path, small_disk) -> None:
    disk = small_disk(256 << 10)  # room for the run's logs, not for a checkpoint of this model
    with pytest.raises(RunFailed, match=r"step 1: no space left on .*checkpoints writing last.pt"):
        train(tiny(corpus, max_steps=3), disk / "run")
    assert not (disk / "run" / "checkpoints" / "ckpt.tmp").exists()
    assert "no space left" in json.loads((disk / "run" / "failed.json").read_text())["error"]


# ----------------------------------------------------------------------------- the CLI


def _tiny_overrides(corpus: Path, run_dir: Path) -> list[str]:
    return [*tiny_cli_run(corpus, run_dir), "trainer.val_every=0"]


def test_cli_a_run_that_learns_nothing_ends_non_zero_in_one_line(corpus: Path, tmp_path: Path) -> None:
    result = run_train(
        *_tiny_overrides(corpus, tmp_path / "run"),
        "trainer.lr=1e9",
        "trainer.max_steps=20",
        "trainer.grad_clip=0",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kvideo: run failed: non-finite loss") and "HYDRA_FULL_ERROR=1" in last
    assert "Traceback" not in result.stderr


def test_cli_data_errors_are_one_line_and_a_traceback_on_request(tmp_path: Path) -> None:
    args = ["video/dataset=manifest", f"video.data_root={tmp_path}/none.jsonl", f"hydra.run.dir={tmp_path}/r"]
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith(f"kvideo: video.data_root='{tmp_path}/none.jsonl'")
    )
    full = run_train(*args, cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr


def test_cli_ctrl_c_checkpoints_at_the_next_step(corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            *_tiny_overrides(corpus, run_dir),
            "trainer.max_steps=100000",
            "trainer.ckpt_every=0",
            "trainer.log_every=1",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "metrics.jsonl").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-2000:]
    assert "preempted (SIGINT): checkpointed step" in out
    assert read_checkpoint(checkpoint_dir(run_dir) / "last.pt")["step"] >= 1
    # what to do next: the run's own command line, its run dir named
    said = next(line for line in out.splitlines() if line.startswith("kvideo: preempted; to continue: "))
    words = shlex.split(said.removeprefix("kvideo: preempted; to continue: "))
    overrides = [o for o in _tiny_overrides(corpus, run_dir) if not o.startswith("hydra.run.dir=")]
    assert words == [
        "python",
        "train.py",
        *overrides,
        "trainer.max_steps=100000",
        "trainer.ckpt_every=0",
        "trainer.log_every=1",
        f"hydra.run.dir={run_dir}",
    ]


# ----------------------------------------------------------------------------- unreadable checkpoints


def test_a_checkpoint_holding_python_objects_is_refused_without_advice_to_unpickle_it(tmp_path: Path) -> None:
    import datetime

    from kvideo.train.checkpoint import CheckpointError

    pickled = tmp_path / "last.pt"
    torch.save({"step": 1, "when": datetime.datetime(2026, 1, 1)}, pickled)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(pickled)
    assert "not a kvideo checkpoint" in str(info.value) and "weights_only" not in str(info.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=r"garbage.pt: unreadable \(") as info:
        read_checkpoint(garbage)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- start-up signals

_SLOW_START = textwrap.dedent(
    """
    import os, signal, sys, time
    import kvideo.model.spec as spec
    from omegaconf import OmegaConf
    from kvideo.config import config_from
    from kvideo.train import train

    def build_model(*args, **kwargs):  # stands in for a long start-up (a huge allocation)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
        raise SystemExit("SIGTERM was ignored during start-up")

    spec.build_model = build_model
    train(config_from(OmegaConf.load(sys.argv[1])), sys.argv[2])
    """
)


def test_a_signal_during_start_up_ends_the_process_at_once(corpus: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.structured(tiny(corpus))))
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _SLOW_START, str(cfg_path), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    assert time.monotonic() - t0 < 30  # not the 60 s the start-up would have taken


def test_failed_json_is_written_once_and_never_through_a_planted_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / f"failed.json.{os.getpid()}.tmp").symlink_to(outside)
    assert write_failed(run_dir, "first", 3)
    assert not write_failed(run_dir, "second", 4)  # a rank that only lost its peer
    assert json.loads((run_dir / "failed.json").read_text())["error"] == "first"
    assert outside.read_text() == "keep" and sorted(p.name for p in run_dir.iterdir()) == ["failed.json"]
