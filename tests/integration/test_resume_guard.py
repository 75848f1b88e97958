"""``trainer.resume`` and ``trainer.init_from``: a run dir holding another experiment is not
silently continued, and a new run can start from a trained run's weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from kvideo.train.checkpoint import checkpoint_dir, read_checkpoint
from kvideo.train.distributed import cleanup, init_distributed
from kvideo.train.loop import Trainer
from kvideo.train.resume import ResumeRefused
from kvideo.train.run import train
from tests.helpers.cli import run_train
from tests.helpers.configs import tiny_cli_run, tiny_config

pytestmark = pytest.mark.slow  # trains a model


def _launches(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "launches.jsonl").read_text().splitlines()]


def test_a_run_dir_of_another_experiment_is_refused_unless_forced(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_config(tmp_path / "data", max_steps=3, val_every=0)
    assert train(cfg, run_dir)["status"] == "completed"
    saved = (run_dir / "config.yaml").read_text()

    other = dataclasses.replace(
        cfg,
        video=dataclasses.replace(cfg.video, fps=1.0),
        trainer=dataclasses.replace(cfg.trainer, max_steps=4),
    )
    with pytest.raises(
        ResumeRefused, match=r"holds a run of another experiment: video\.fps \(2\.0 -> 1\.0\); "
    ):
        train(other, run_dir)
    assert (run_dir / "config.yaml").read_text() == saved  # nothing was written
    longer = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=4))
    assert train(longer, run_dir)["status"] == "completed"  # more steps: the same experiment

    forced = dataclasses.replace(
        other, trainer=dataclasses.replace(other.trainer, max_steps=5, resume="force")
    )
    assert train(forced, run_dir)["status"] == "completed"
    assert _launches(run_dir)[-1]["config_changes"] == {"video.fps": [2.0, 1.0]}

    never = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, resume="never"))
    with pytest.raises(ResumeRefused, match=r"already holds a checkpoint and trainer\.resume=never"):
        train(never, run_dir)


def test_the_cli_refuses_another_experiments_run_dir_in_one_line(tmp_path: Path) -> None:
    args = [*tiny_cli_run(tmp_path / "data", tmp_path / "run"), "trainer.max_steps=2", "trainer.val_every=0"]
    assert run_train(*args, cwd=tmp_path).returncode == 0
    result = run_train(*args, "model.lm_depth=1", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "holds a run of another experiment: model.lm_depth (2 -> 1)" in lines[-1]
    assert "trainer.init_from=" in lines[-1] and "trainer.resume=force" in lines[-1]


def test_a_new_run_starts_from_another_runs_weights_with_a_fresh_optimizer(tmp_path: Path) -> None:
    stage1 = tmp_path / "stage1"
    cfg = tiny_config(tmp_path / "data", max_steps=3, val_every=0)
    train(cfg, stage1)
    trained = read_checkpoint(checkpoint_dir(stage1) / "last.pt")["model"]

    stage2 = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, init_from=str(stage1)))
    env = init_distributed("cpu")
    trainer = Trainer(stage2, tmp_path / "stage2", env)
    try:
        assert trainer.step == 0 and not trainer.optimizer.optimizer.state  # fresh optimizer
        weights = trainer.raw_model.state_dict()
        assert all(torch.equal(weights[name], value) for name, value in trained.items())
    finally:
        trainer.report.close()
        trainer.close()
        cleanup(env)
    assert _launches(tmp_path / "stage2")[-1]["initialized_from"] == str(stage1)

    wider = dataclasses.replace(stage2, model=dataclasses.replace(stage2.model, lm_width=64, lm_heads=4))
    with pytest.raises(
        ValueError, match=r"holds '.*' of shape \(.*\), this model's is .*: it is another model's"
    ):
        train(wider, tmp_path / "stage2_wider")
