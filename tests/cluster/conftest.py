"""The local SLURM clusters the tests here submit to, and the tiny corpus their jobs read."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO
from tests.helpers.slurm_jobs import TINY_TRAIN

SCRIPT = REPO / "scripts" / "slurm_local.sh"
SKIP_RC = 77  # scripts/slurm_local.sh: cannot run here (not root, no apt-get, no namespaces)


def _start(*args: str) -> None:
    """``slurm_local.sh start ARGS``: skips on exit 77 with the script's reason, fails otherwise."""
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), "start", *args], capture_output=True, text=True, timeout=900, check=False
        )
    except FileNotFoundError as exc:  # no bash at all
        pytest.skip(f"cannot run {SCRIPT.name}: {exc}")
    if proc.returncode == SKIP_RC:
        reason = (proc.stderr.strip().splitlines() or ["exit 77"])[-1]
        pytest.skip(f"local SLURM cluster unavailable: {reason}")
    if proc.returncode != 0:
        command = " ".join([SCRIPT.name, "start", *args])
        pytest.fail(f"{command} failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """Starts (or reuses) the single-node cluster; returns the partition name."""
    _start()
    return "debug"


@pytest.fixture(scope="module")
def two_node_cluster() -> dict[str, str]:
    """Starts (or reuses) the 2-node cluster (``--nodes 2``, one network namespace per node),
    which runs beside the single-node one; returns the variable its clients need,
    ``{"SLURM_CONF": ...}``, for a subprocess's environment."""
    _start("--nodes", "2")
    line = subprocess.run(
        ["bash", str(SCRIPT), "env", "--nodes", "2"], capture_output=True, text=True, check=True
    ).stdout.strip()
    name, _, value = line.removeprefix("export ").partition("=")
    assert name == "SLURM_CONF" and value, line
    return {name: value}


@pytest.fixture(scope="session")
def corpus_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Generate the tiny sample corpus before submitting, so jobs only read it. Jobs import
    kvideo from this checkout (``PYTHONPATH``), whatever else the environment has installed."""
    env = dict(os.environ)
    env["KVIDEO_CACHE"] = str(tmp_path_factory.mktemp("slurm_cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            *TINY_TRAIN,
            "trainer.max_steps=1",
            f"hydra.run.dir={env['KVIDEO_CACHE']}/warmup",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env
