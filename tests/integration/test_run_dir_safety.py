"""A run dir is data: what was planted in it never runs, and nothing is written through it.

* A DCP checkpoint whose ``.metadata`` asks for code: ``kvideo.export`` and a resume pass it
  over for the older checkpoint, naming it, and the payload never runs.
* A symbolic link where kvideo, Hydra or their libraries write (``run.lock``, ``launches.jsonl``,
  ``checkpoints/ckpt.tmp``, ``.hydra/config.yaml``): ``train.py`` refuses the run dir in one line
  before writing anything, and the link's target is untouched.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from kvideo.train.checkpoint_dcp import METADATA_NAME, commit, folder_for, prepare_tmp, write_trainer_state
from kvideo.train.run import train
from tests.helpers.cli import run_module, run_train
from tests.helpers.configs import tiny_cli_run, tiny_config
from tests.unit.test_dcp_reading import Payload

pytestmark = pytest.mark.slow  # trains a model

STEPS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of ``STEPS`` steps (its ``last.pt`` at the last one) and its corpus beside it."""
    root = tmp_path_factory.mktemp("safety")
    result = train(tiny_config(root / "data", max_steps=STEPS, val_every=0), root / "run")
    assert result["status"] == "completed"
    return root / "run"


def _copy(run: Path, into: Path) -> Path:
    return Path(shutil.copytree(run, into, symlinks=True))


def test_a_planted_dcp_index_never_runs_and_the_older_checkpoint_serves(
    trained: Path, tmp_path: Path
) -> None:
    run = _copy(trained, tmp_path / "run")
    folder = folder_for(run / "checkpoints", 99)
    tmp = prepare_tmp(folder)
    write_trainer_state(tmp, {"step": 99, "scheduler": {}, "data": {}, "ranks": [], "optimizer_params": []})
    marker = tmp_path / "pwned"
    (tmp / METADATA_NAME).write_bytes(pickle.dumps(Payload(marker)))
    commit(tmp, folder, keep=3)

    exported = run_module("kvideo.export", str(run), "--out", str(tmp_path / "export"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "step_000099.dcp/.metadata: refused: it asks for posix.system" in exported.stderr
    assert '"step": 2' in (tmp_path / "export" / "export.json").read_text()

    cfg = tiny_config(trained.parent / "data", max_steps=STEPS + 1, val_every=0)
    resumed = train(cfg, run)
    assert resumed["status"] == "completed" and resumed["resumed_from"] == STEPS
    assert not marker.exists()


@pytest.mark.parametrize("name", ["run.lock", "launches.jsonl", "checkpoints/ckpt.tmp", ".hydra/config.yaml"])
def test_a_link_where_a_run_writes_is_refused_before_any_write(
    name: str, trained: Path, tmp_path: Path
) -> None:
    run = _copy(trained, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = run / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    launches = (run / "launches.jsonl").read_bytes() if name != "launches.jsonl" else b""

    result = run_train(
        *tiny_cli_run(trained.parent / "data", run), f"trainer.max_steps={STEPS + 1}", cwd=tmp_path
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("kvideo")]
    assert len(lines) == 1 and f"{name} is a symbolic link (to {victim})" in lines[0], result.stderr[-2000:]
    assert victim.read_text() == "precious\n"
    if launches:
        assert (run / "launches.jsonl").read_bytes() == launches  # nothing was written


def test_a_billion_laughs_config_is_refused_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    laughs = ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    for level in "bcdefghi":
        laughs.append(f"{level}: &{level} [{', '.join(['*' + chr(ord(level) - 1)] * 10)}]")
    (run / "config.yaml").write_text("\n".join(laughs) + "\n")
    result = run_module("kvideo.caption", str(run), "a.mp4", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"kvideo.caption: {run / 'config.yaml'}: holds YAML anchors or aliases, which kvideo never "
        "writes (a file of nested aliases expands exponentially); refused"
    ]
