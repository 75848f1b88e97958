"""The local SLURM cluster every test here submits to."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.paths import REPO

SCRIPT = REPO / "scripts" / "slurm_local.sh"
SKIP_RC = 77  # scripts/slurm_local.sh: cannot run here (not root, no apt-get)


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """Starts (or reuses) the local cluster; returns the partition name."""
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900, check=False
        )
    except FileNotFoundError as exc:  # no bash at all
        pytest.skip(f"cannot run {SCRIPT.name}: {exc}")
    if proc.returncode == SKIP_RC:
        reason = (proc.stderr.strip().splitlines() or ["exit 77"])[-1]
        pytest.skip(f"local SLURM cluster unavailable: {reason}")
    if proc.returncode != 0:
        pytest.fail(
            f"{SCRIPT.name} start failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return "debug"
