"""End-to-end checks of the local single-node SLURM cluster from ``scripts/slurm_local.sh``.

The module fixture starts the cluster (installing slurm-wlm/munge with apt-get when missing).
The module is skipped only when the script exits 77 (not root / no apt-get); any other start
failure is a test error, with the script's output (it includes the daemon log tails).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def _run(*cmd: str, timeout: float = 30) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _job_state(job_id: str) -> str:
    out = _run("scontrol", "show", "job", "-o", job_id)
    match = re.search(r"\bJobState=(\S+)", out)
    assert match, out
    return match.group(1)


def _wait(predicate, timeout: float, what: str, job_id: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    state = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{state}")


def _sbatch(*args: str) -> str:
    out = _run("sbatch", "--parsable", *args)
    return out.strip().split(";")[0]


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_sbatch_job_sees_its_job_id(slurm_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "hello.out"
    job_id = _sbatch("-p", slurm_cluster, "-o", str(out), "--wrap", "echo hello $SLURM_JOB_ID")
    try:
        state = _wait(lambda: (s := _job_state(job_id)) in TERMINAL and s, 60, "the job to finish", job_id)
        assert state == "COMPLETED", state
        _wait(lambda: f"hello {job_id}" in _read(out), 10, "the job output", job_id)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, check=False)


def test_requeue_restarts_job_with_restart_count(slurm_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "requeue.out"
    script = tmp_path / "requeue.sh"
    script.write_text(
        "#!/bin/bash\n"
        'echo "run job=$SLURM_JOB_ID restart=${SLURM_RESTART_COUNT:-0}"\n'
        # First run waits to be requeued; the requeued run finishes at once.
        'if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then sleep 120; fi\n'
        'echo "done restart=${SLURM_RESTART_COUNT:-0}"\n'
    )
    job_id = _sbatch("-p", slurm_cluster, "-o", str(out), "--open-mode=append", "--requeue", str(script))
    try:
        _wait(
            lambda: _job_state(job_id) == "RUNNING" and "restart=0" in _read(out),
            60,
            "the first run to start",
            job_id,
        )
        _run("scontrol", "requeue", job_id)
        # Back to PENDING (or already restarted) right after the requeue.
        assert _job_state(job_id) in {"PENDING", "REQUEUED", "COMPLETING", "RUNNING", "COMPLETED"}
        # The requeued run starts after AuthInfo=cred_expire (10 s in slurm_local.sh).
        state = _wait(
            lambda: (s := _job_state(job_id)) in TERMINAL and s, 90, "the requeued run to finish", job_id
        )
        assert state == "COMPLETED", state
        text = _wait(
            lambda: "done restart=1" in (t := _read(out)) and t, 10, "the second run's output", job_id
        )
        assert f"run job={job_id} restart=0" in text
        assert f"run job={job_id} restart=1" in text
        assert "done restart=0" not in text, "the first run was not interrupted by the requeue"
        restarts = re.search(r"\bRestarts=(\d+)", _run("scontrol", "show", "job", "-o", job_id))
        assert restarts and int(restarts.group(1)) == 1
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, check=False)
