"""``trainer.keep_last`` and ``trainer.keep_best``: the newest step checkpoints kept, and the
best validation's weights kept apart (``best.pt``, ``best.json``, ``final.json``'s ``best``),
surviving a resume and loadable by the inference tools."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from kvideo.inference import load_trained
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow  # trains a model


def _validations(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if r.get("split") == "validation"]


@pytest.mark.parametrize(("metric", "mode"), [("val_loss", "min"), ("acc_color", "max")])
def test_the_best_validation_is_kept_beside_the_newest_checkpoints(
    metric: str, mode: str, tmp_path: Path
) -> None:
    cfg = tiny_config(tmp_path / "data", max_steps=8, val_every=2, ckpt_every=2)
    cfg.trainer.keep_last, cfg.trainer.keep_best, cfg.trainer.keep_best_mode = 1, metric, mode
    run = tmp_path / "run"
    final = train(cfg, run)
    assert final["status"] == "completed"
    values = [(v[metric], v["step"]) for v in _validations(run)]
    assert [step for _, step in values] == [2, 4, 6, 8]
    best_value = (min if mode == "min" else max)(v for v, _ in values)
    step = next(s for v, s in values if v == best_value)  # a later equal value does not beat it
    value = best_value
    assert final["best"] == {
        "step": step,
        "metric": metric,
        "value": value,
        "path": str(run / "checkpoints" / "best.pt"),
    }
    assert json.loads((run / "checkpoints" / "best.json").read_text())["step"] == step
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.json",
        "best.pt",
        "last.pt",
        "step_000008.pt",
    ]  # keep_last=1: one step copy
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["step"] == step
    assert load_trained(str(run / "checkpoints" / "best.pt"), device="cpu").step == step


def test_the_best_survives_a_resume_and_an_unknown_metric_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config(tmp_path / "data", max_steps=4, val_every=2, ckpt_every=2)
    cfg.trainer.keep_best = "val_loss"
    run = tmp_path / "run"
    first = train(cfg, run)["best"]
    cfg.trainer.max_steps = 8
    final = train(cfg, run)
    values = {v["step"]: v["val_loss"] for v in _validations(run)}
    best_step = min(values, key=lambda s: (values[s], s))
    assert final["resumed_from"] == 4 and final["best"]["step"] == best_step
    assert final["best"]["value"] <= first["value"]

    cfg.trainer.keep_best = "acc_nothing"
    with caplog.at_level(logging.INFO):
        other = train(cfg, tmp_path / "other")
    assert other["status"] == "completed" and other["best"] is None
    said = [r.getMessage() for r in caplog.records if "trainer.keep_best=acc_nothing" in r.getMessage()]
    assert len(said) == 1 and "no best checkpoint is kept" in said[0]
    assert not (tmp_path / "other" / "checkpoints" / "best.pt").exists()
