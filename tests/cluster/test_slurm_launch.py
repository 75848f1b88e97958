"""``python train.py -m hydra/launcher=slurm`` on a real (local, single-node) SLURM cluster.

Jobs go through hydra-submitit-launcher -> sbatch -> srun -> train.py, exactly as on a
site cluster; nothing is mocked. Skipped only when scripts/slurm_local.sh cannot start
a cluster (exit 77: not root), with that reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from kvideo.files import read_jsonl
from tests.helpers.slurm_jobs import submit

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


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
    # Each job's log files were named as it was submitted (the plugin says nothing of them).
    said = re.findall(r"job #(\d) is SLURM job (\d+_\d): logs (\S+) and (\S+)", out)
    assert [num for num, *_ in said] == ["0", "1", "2"], out[-3000:]
    for _num, slurm_id, stdout, stderr in said:
        assert Path(stdout).is_file() and Path(stderr).is_file() and slurm_id in stdout
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
