"""``data.packing`` and ``data.batch_tokens`` in whole runs: a packed run trains on exactly the
losses of the padded one, a packed token-budget run resumes after a crash on exactly the batches
of an uninterrupted one, and two DDP or FSDP ranks with token-budget batches cross epochs in step
(a rank with fewer batches would leave the other waiting in a collective)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kvideo.config import KVideoConfig
from kvideo.model import spec
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.configs import tiny_config
from tests.helpers.preemption import InjectedCrash, crashing_build_model
from tests.helpers.ranks import run_ranks

pytestmark = pytest.mark.slow  # trains models


def _steps(run_dir: Path) -> list[dict[str, float]]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r]


def _packed(cfg: KVideoConfig, **data: int | bool) -> KVideoConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data))  # type: ignore[arg-type]


def test_a_packed_run_trains_on_the_losses_of_the_padded_run(tmp_path: Path) -> None:
    """Without dropout (a packed row draws its own dropout masks), every step's loss is the
    padded run's, and the packed run computes fewer token slots for the same real tokens."""
    cfg = tiny_config(tmp_path / "data", max_steps=4, val_every=4, ckpt_every=0)
    cfg.model = dataclasses.replace(cfg.model, dropout=0.0)
    padded = train(cfg, tmp_path / "padded")
    packed = train(_packed(cfg, packing=True, max_tokens_per_row=200), tmp_path / "packed")
    for one, other in zip(_steps(tmp_path / "padded"), _steps(tmp_path / "packed"), strict=True):
        assert other["loss"] == pytest.approx(one["loss"], abs=1e-5)
        assert 0 < one["token_efficiency"] < other["token_efficiency"] <= 1
    assert packed["val_loss"] == pytest.approx(padded["val_loss"], abs=1e-5)
    assert packed["token_efficiency"] > padded["token_efficiency"]


def test_a_packed_token_budget_run_resumes_on_the_batches_of_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grad_accum 2, batches of about 3 clips: the crash at forward 7 leaves steps 1-3; the
    resumed run must see the batches the reference saw from step 4 on."""
    cfg = tiny_config(tmp_path / "data", max_steps=8, ckpt_every=0, val_every=0)
    cfg = _packed(cfg, packing=True, batch_tokens=100)
    reference = train(cfg, tmp_path / "reference")
    build = spec.build_model
    monkeypatch.setattr(spec, "build_model", crashing_build_model(7))
    with pytest.raises(InjectedCrash):
        train(cfg, tmp_path / "run")
    monkeypatch.setattr(spec, "build_model", build)
    final = train(cfg, tmp_path / "run")
    assert final["resumed_from"] == 3 and final["status"] == "completed"
    expected, got = _steps(tmp_path / "reference"), _steps(tmp_path / "run")
    assert [r["step"] for r in got] == list(range(1, 9))
    for want, have in zip(expected, got, strict=True):
        assert have["loss"] == pytest.approx(want["loss"], abs=1e-6), have["step"]
    assert reference["epoch"] >= 1  # the budget batches crossed an epoch


def _budget_worker(rank: int, data_root: str, run_dir: str, out_dir: str, strategy: str) -> None:
    cfg = tiny_config(Path(data_root), max_steps=8, ckpt_every=4, val_every=4, val_max_batches=0)
    cfg.trainer.strategy = strategy
    final = train(_packed(cfg, packing=True, batch_tokens=100), run_dir)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(final))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_with_token_budget_batches_cross_epochs_in_step(tmp_path: Path, strategy: str) -> None:
    run_dir = tmp_path / "run"
    run_ranks(_budget_worker, 2, str(tmp_path / "data"), str(run_dir), str(tmp_path), strategy)
    finals = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert finals[0]["status"] == finals[1]["status"] == "completed"
    assert finals[0]["epoch"] == finals[1]["epoch"] >= 2
    assert finals[0]["val_loss"] == finals[1]["val_loss"]
    steps = _steps(run_dir)
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all(0 < r["token_efficiency"] <= 1 for r in steps)
