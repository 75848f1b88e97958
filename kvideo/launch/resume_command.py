"""The command that continues a stopped run, printed when it stops (Ctrl-C, preemption): the
run's own command line with its run dir named, which resumes from the last checkpoint."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path


def resume_command(task_overrides: Sequence[str], run_dir: Path, *, script: str = "train.py") -> str:
    """``python train.py <the run's overrides> hydra.run.dir=<run_dir>``, shell-quoted."""
    kept = [o for o in task_overrides if not o.split("=", 1)[0].lstrip("+~").startswith("hydra.run.dir")]
    words = ["python", script, *kept, f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(w) for w in words)
