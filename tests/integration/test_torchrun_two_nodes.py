"""``torchrun --nnodes 2``: two torchrun agents, each one node with one process, on localhost.

The agents find each other the two ways a site uses (a static master, ``--node_rank`` per node;
the c10d rendezvous, no ranks given), train one gloo rank each, and the second pair resumes from
the first pair's checkpoint. The 2-node SLURM test (tests/cluster/) covers two real hostnames.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kvideo.files import read_jsonl
from tests.helpers.configs import TINY_CLI_OVERRIDES
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow  # trains a model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_two_agents(agent_args: list[list[str]], train_args: list[str], cwd: Path) -> list[str]:
    """Start one ``torchrun --nnodes 2 --nproc_per_node 1`` agent per ``agent_args`` entry at once;
    return their outputs once both exit 0."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                *args,
                str(REPO / "train.py"),
                *train_args,
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args in agent_args
    ]
    outputs = []
    try:
        for agent in agents:
            outputs.append(agent.communicate(timeout=240)[0])
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    for agent, out in zip(agents, outputs, strict=True):
        assert agent.returncode == 0, out
    return outputs


def test_two_torchrun_agents_train_one_rank_each_and_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train = [
        *TINY_CLI_OVERRIDES,
        f"video.data_root={tmp_path / 'data'}",
        "data.sample_train_clips=16",
        "data.sample_val_clips=8",
        "trainer.log_every=1",
        "trainer.ckpt_every=2",
        "trainer.val_every=0",
        # Both nodes must name the same run dir (the default has the start time in it).
        f"hydra.run.dir={run_dir}",
    ]
    port = _free_port()
    static = [
        ["--node_rank=0", "--master_addr=127.0.0.1", f"--master_port={port}"],
        ["--node_rank=1", "--master_addr=127.0.0.1", f"--master_port={port}"],
    ]
    run_two_agents(static, [*train, "trainer.max_steps=4"], tmp_path)

    rendezvous = ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=kvideo-test"]
    run_two_agents([rendezvous, rendezvous], [*train, "trainer.max_steps=6"], tmp_path)

    launches = read_jsonl(run_dir / "launches.jsonl")
    assert [(launch["world_size"], launch["resumed_from"]) for launch in launches] == [(2, None), (2, 4)]
    assert all(len(launch["rank_hosts"]) == 2 for launch in launches)
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") != "validation"]
    assert steps == [1, 2, 3, 4, 5, 6]  # the second pair went on from step 4, nothing repeated
    final = json.loads((run_dir / "final.json").read_text())
    assert (final["status"], final["step"], final["world_size"]) == ("completed", 6, 2)
