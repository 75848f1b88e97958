"""Validation decodes once (``data.val_cache_mb``): in a real run every validation's numbers and
generated captions are those of a run that decodes at every validation, and the later
validations are the cheap ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow  # trains models


def _validations(run_dir: Path) -> list[dict[str, object]]:
    return [
        {k: v for k, v in r.items() if k != "val_time_s"}
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if r.get("split") == "validation"
    ]


def test_cached_validations_equal_decoded_ones_bit_for_bit(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "data", max_steps=6, val_every=2, val_max_batches=0, ckpt_every=0)
    cfg.trainer.val_predictions = 3
    train(cfg, tmp_path / "cached")
    uncached = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_cache_mb=0))
    train(uncached, tmp_path / "decoded")
    cached, decoded = _validations(tmp_path / "cached"), _validations(tmp_path / "decoded")
    assert len(cached) == 3 and cached == decoded
    assert read_jsonl(tmp_path / "cached" / "predictions_val.jsonl") == read_jsonl(
        tmp_path / "decoded" / "predictions_val.jsonl"
    )
