"""``python train.py -m hydra/launcher=slurm`` on a real (local, single-node) SLURM cluster.

Jobs go through hydra-submitit-launcher -> sbatch -> srun -> train.py, exactly as on a
site cluster; nothing is mocked. Skipped only when scripts/slurm_local.sh cannot start
a cluster (exit 77: not root), with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Small enough that a job runs in seconds on one CPU; the corpus is generated once up front.
TINY = [
    "trainer=debug",
    "trainer.max_steps=6",
    "trainer.batch_size=4",
    "data.sample_train_clips=16",
    "data.sample_val_clips=8",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=15",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Generate the tiny sample corpus before submitting, so jobs only read it."""
    env = dict(os.environ)
    env["KVIDEO_CACHE"] = str(tmp_path_factory.mktemp("slurm_cache"))
    subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            *TINY[:5],
            "trainer.max_steps=1",
            f"hydra.run.dir={env['KVIDEO_CACHE']}/warmup",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env


def submit(args: list[str], cwd: Path, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", *TINY, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_three_job_sweep_runs_under_slurm_and_reports(
    slurm_cluster: str, corpus_env: dict[str, str], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    proc = submit(["video.max_frames=1,2,4", f"hydra.sweep.dir={sweep}"], tmp_path, corpus_env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    job_ids = set()
    for num in range(3):
        launches = read_jsonl(sweep / str(num) / "launches.jsonl")
        assert launches[0]["slurm_job_id"], launches  # it really ran inside a SLURM job
        job_ids.add(launches[0]["slurm_job_id"])
        final = json.loads((sweep / str(num) / "final.json").read_text())
        assert final["status"] == "completed" and final["step"] == 6
    assert len(job_ids) == 3
    report = (sweep / "report.md").read_text()
    assert "video.max_frames" in report and report.count("| ok |") == 3
    assert (sweep / "report.png").stat().st_size > 0


def test_requeued_job_resumes_from_its_checkpoint(
    slurm_cluster: str, corpus_env: dict[str, str], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"
    proc = submit(
        ["trainer.max_steps=100", "trainer.ckpt_every=5", "video.max_frames=2", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        corpus_env,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the job never wrote a checkpoint"
            time.sleep(0.5)
        job_id = read_jsonl(run_dir / "launches.jsonl")[0]["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    launches = read_jsonl(run_dir / "launches.jsonl")
    assert len(launches) == 2, launches
    second = launches[1]
    assert second["slurm_job_id"] == job_id  # the same job, requeued...
    assert second["slurm_restart_count"] >= 1
    assert second["resumed_from"] is not None and second["resumed_from"] >= 5  # ...resumed, not restarted
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") != "validation"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one consistent history
    assert json.loads((run_dir / "final.json").read_text())["step"] == 100
