"""One-machine sweeps through the joblib and submitit_local launchers, end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

TINY = ["trainer=debug", "data.sample_train_clips=16", "data.sample_val_clips=8", "video.max_frames=1,2"]


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_local_sweep_runs_every_job_and_reports(launcher: list[str], tmp_path: Path) -> None:
    env = dict(os.environ, KVIDEO_CACHE=str(tmp_path / "cache"))
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *launcher, *TINY, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for num in ("0", "1"):
        final = json.loads((sweep / num / "final.json").read_text())
        assert final["status"] == "completed" and final["step"] == 4
    rows = list(csv.DictReader(open(sweep / "report.csv")))
    assert [(r["video.max_frames"], r["status"]) for r in rows] == [("1", "ok"), ("2", "ok")]
    assert (sweep / "report.png").is_file()
