"""``kvideo-torchrun``: a SIGTERM to one rank of a torchrun job checkpoints, and the job exits 75
(the requeue code), where plain torchrun exits 1 (its ``ChildFailedError``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvideo.train.checkpoint import checkpoint_dir, read_checkpoint
from kvideo.train.signals import EXIT_PREEMPTED
from tests.helpers.configs import tiny_cli_run
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow  # trains a model on two ranks


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its torchrun workers), from ``/proc``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_a_preempted_rank_makes_the_torchrun_job_exit_75_after_its_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        *tiny_cli_run(tmp_path / "corpus", run_dir),
        "trainer.max_steps=100000",
        "trainer.ckpt_every=0",
        "trainer.val_every=0",
        "trainer.log_every=1",
        "trainer.export_at_end=false",
    ]
    agent = subprocess.Popen(
        [
            *(sys.executable, "-m", "kvideo.launch.torchrun", "--standalone", "--nproc_per_node", "2"),
            *(str(REPO / "train.py"), *overrides),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (run_dir / "metrics.jsonl").exists():
            assert agent.poll() is None, agent.communicate()[0][-3000:]
            time.sleep(0.2)
        ranks = _children(agent.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGTERM)  # the scheduler's notice, reaching one rank first
        out, _ = agent.communicate(timeout=240)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == EXIT_PREEMPTED, out[-3000:]
    assert "was preempted and checkpointed: exit 75" in out
    assert read_checkpoint(checkpoint_dir(run_dir) / "last.pt")["step"] >= 1
