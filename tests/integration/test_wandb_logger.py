"""``trainer.loggers=[tensorboard,wandb]``: a real tiny run logged to an offline W&B run, read
back from wandb's own files; the resumed run continues the same W&B run; a missing wandb fails
at trainer start with the install line."""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from kvideo.train.loggers import WANDB_ID_NAME, WandbLogger, run_name
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers import wandb_records
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow  # trains a model

needs_wandb = pytest.mark.skipif(
    find_spec("wandb") is None, reason="wandb is not installed (pip install 'kvideo[wandb]')"
)


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, no login, and nothing written outside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var, folder in [
        ("WANDB_DIR", "wandb_dir"),
        ("WANDB_CACHE_DIR", "wandb_cache"),
        ("WANDB_DATA_DIR", "wandb_data"),
        ("WANDB_CONFIG_DIR", "wandb_config"),
    ]:
        monkeypatch.setenv(var, str(tmp_path / folder))


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@needs_wandb
def test_offline_run_holds_the_scalars_config_and_final_metrics_and_a_resume_keeps_the_run_id(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "outputs" / "day" / "run"
    cfg = tiny_config(tmp_path / "corpus", max_steps=6, loggers=["tensorboard", "wandb"])
    final = train(cfg, run_dir)

    logs = _offline_runs(run_dir)
    assert len(logs) == 1
    run_id = (run_dir / WANDB_ID_NAME).read_text().strip()
    records = wandb_records.read_finished_run(logs[0])
    info = wandb_records.run_info(records)
    assert (info.run_id, info.project, info.display_name) == (run_id, "kvideo", "day/run")

    # The same numbers as metrics.jsonl, at the same steps.
    rows = wandb_records.history(records)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    train_loss = {r["step"]: r["loss"] for r in metrics if "split" not in r}
    assert {r["_step"]: r["train/loss"] for r in rows if "train/loss" in r} == pytest.approx(train_loss)
    val = [r for r in metrics if r.get("split") == "validation"]
    assert [r["step"] for r in val] == [6]
    logged_val = [r for r in rows if "val/val_loss" in r]
    assert [(r["_step"], r["val/val_loss"], r["val/acc_color"]) for r in logged_val] == [
        (6, pytest.approx(val[0]["val_loss"]), pytest.approx(val[0]["acc_color"]))
    ]
    config = wandb_records.config(records)
    assert config["trainer"]["max_steps"] == 6 and config["trainer"]["loggers"] == ["tensorboard", "wandb"]
    summary = wandb_records.summary(records)
    assert summary["final/val_loss"] == pytest.approx(final["val_loss"])
    assert summary["final/status"] == "completed"
    # TensorBoard still gets everything beside it.
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))

    # Resume from the step-6 checkpoint to step 9: the same W&B run id, history continued.
    resumed = tiny_config(tmp_path / "corpus", max_steps=9, loggers=["tensorboard", "wandb"])
    assert train(resumed, run_dir)["resumed_from"] == 6
    assert (run_dir / WANDB_ID_NAME).read_text().strip() == run_id
    later = [wandb_records.read_finished_run(p) for p in _offline_runs(run_dir)]
    assert [wandb_records.run_info(r).run_id for r in later] == [run_id] * len(later)
    steps = [row["_step"] for row in wandb_records.history(later[-1]) if "train/loss" in row]
    assert steps == [7, 8, 9]


@needs_wandb
def test_predictions_become_a_table(tmp_path: Path) -> None:
    logger = WandbLogger(tmp_path, project="kvideo-test")
    logger.log_predictions([{"video": "a.mp4", "reference": "red | circle", "generated": "red"}], step=4)
    logger.close()
    (log,) = _offline_runs(tmp_path)
    (row,) = wandb_records.history(wandb_records.read_finished_run(log))
    assert row["_step"] == 4 and row["val/predictions/_type"] == "table-file"
    table_file = log.parent / "files" / row["val/predictions/path"]
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["step", "video", "reference", "generated"]
    assert table["data"] == [[4, "a.mp4", "red | circle", "red"]]


def test_run_name_is_the_run_dirs_last_two_parts(tmp_path: Path) -> None:
    assert run_name(tmp_path / "multirun" / "10-00-00" / "3") == "10-00-00/3"


def test_a_missing_wandb_fails_at_trainer_start_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    cfg = tiny_config(tmp_path / "no_corpus", loggers=["tensorboard", "wandb"])
    with pytest.raises(
        RuntimeError, match=r"trainer.loggers includes wandb, which is not installed: pip install wandb"
    ):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "no_corpus").exists()  # failed before building the data
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
