"""Two SLURM nodes on one machine, and a training job across both.

``scripts/slurm_local.sh start --nodes 2`` makes each node a network + UTS namespace with its own
hostname and address (slurmctld on this machine, on the bridge between them). A job's tasks then
really run on two hosts as far as anything in them can tell: two hostnames, two addresses, gloo
over TCP between them. Skipped only when the script exits 77 (not root, no namespaces here).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

import pytest

from kvideo.files import read_jsonl
from tests.helpers.slurm_jobs import submit

pytestmark = pytest.mark.slurm

NODES = ["kvnode1", "kvnode2"]  # slurm_local.sh's node names


def train_steps(run_dir: Path) -> list[int]:
    """The steps of the training records in ``metrics.jsonl`` (validation records left out)."""
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") != "validation"]


def test_a_two_node_step_runs_a_task_per_node_under_its_own_name_and_address(
    two_node_cluster: dict[str, str],
) -> None:
    # Each task prints its rank, its hostname and what that name resolves to on its node.
    proc = subprocess.run(
        [
            "srun",
            "--nodes=2",
            "--ntasks-per-node=1",
            "bash",
            "-c",
            'echo "$SLURM_PROCID $(hostname) $(getent hosts "$(hostname)" | cut -d" " -f1)"',
        ],
        env={**two_node_cluster, "PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    tasks = sorted(line.split() for line in proc.stdout.splitlines())
    assert [(rank, host) for rank, host, _ in tasks] == [("0", NODES[0]), ("1", NODES[1])]
    addresses = [ipaddress.ip_address(addr) for _, _, addr in tasks]
    assert len(set(addresses)) == 2 and not any(a.is_loopback for a in addresses), tasks


@pytest.mark.slow
def test_two_node_training_job_is_requeued_and_resumes_from_its_checkpoint(
    two_node_cluster: dict[str, str], corpus_env: dict[str, str], tmp_path: Path
) -> None:
    """hydra.launcher.nodes=2, one task per node (no GPUs), gloo between the nodes."""
    env = {**corpus_env, **two_node_cluster}
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"
    proc = submit(
        [
            "hydra.launcher.nodes=2",
            "trainer.max_steps=60",
            "trainer.ckpt_every=5",
            "video.max_frames=2",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        env,
    )
    try:
        # Step 6 logged means the step-5 checkpoint is on disk (saved before step 6 ran).
        deadline = time.monotonic() + 180
        while max(train_steps(run_dir), default=0) < 6:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the job never got past its first checkpoint"
            time.sleep(0.5)
        job_id = read_jsonl(run_dir / "launches.jsonl")[0]["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", job_id], env=env, check=True, timeout=30)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    launches = read_jsonl(run_dir / "launches.jsonl")
    assert len(launches) == 2, launches
    for launch in launches:  # both starts: rank 0 and rank 1 on different nodes
        assert launch["world_size"] == 2 and launch["rank_hosts"] == NODES, launch
    first, second = launches
    assert first["slurm_job_id"] == second["slurm_job_id"] == job_id  # the same job, requeued...
    assert second["slurm_restart_count"] >= 1
    assert second["resumed_from"] is not None and second["resumed_from"] >= 5  # ...resumed, not restarted
    steps = train_steps(run_dir)
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one consistent history
    final = json.loads((run_dir / "final.json").read_text())
    assert (final["status"], final["step"], final["world_size"]) == ("completed", 60, 2)
