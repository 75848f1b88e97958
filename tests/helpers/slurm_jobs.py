"""``python train.py -m hydra/launcher=slurm`` at a size that runs in seconds on one CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPO

# The run: a few small steps on a 16-clip sample corpus (generated once, by the corpus_env fixture).
TINY_TRAIN = [
    "trainer=debug",
    "trainer.max_steps=6",
    "trainer.batch_size=4",
    "data.sample_train_clips=16",
    "data.sample_val_clips=8",
]
# The job: one CPU and 2 GiB per task, on the local clusters' partition.
TINY_JOB = [
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=15",
]


def submit(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """The sweep's submitting process (it blocks until its jobs end); output merged into stdout."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", *TINY_TRAIN, *TINY_JOB, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
