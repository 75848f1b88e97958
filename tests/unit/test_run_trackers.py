"""What the trackers get besides ``metrics.jsonl``: TensorBoard hparams (a session, no
experiment summary), the config YAML as text, predictions as a Markdown table and in
``predictions_val.jsonl``, and the final metrics; read back from the event files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from kvideo.config import DataConfig, KVideoConfig, TrainerConfig
from kvideo.config.trainer import LOGGERS
from kvideo.train.distributed import DistEnv
from kvideo.train.loggers import LOGGER_TYPES, markdown_table
from kvideo.train.metrics import RunClock, RunWriter, read_jsonl
from kvideo.train.report import Reporter
from kvideo.trees import scalar_leaves

ROWS = [
    {"video": "clips/a.mp4", "reference": "a red circle moves left", "generated": "a red circle"},
    {"video": "clips/b.mp4", "reference": "a blue | square", "generated": "a blue\nsquare"},
]


def _reporter(run_dir: Path, *, is_main: bool = True, resumed_from: int | None = None) -> Reporter:
    env = DistEnv(
        rank=0 if is_main else 1, local_rank=0, world_size=2, device=torch.device("cpu"), is_main=is_main
    )
    # Making a Reporter gathers every rank's hostname; there is no process group here, so every
    # rank is taken to be on this host.
    with mock.patch("kvideo.train.report.all_gather_objects", lambda obj, env: [obj] * env.world_size):
        return Reporter(
            run_dir,
            env,
            TrainerConfig(max_steps=8),
            DataConfig(),
            clock=RunClock(),
            num_params=10,
            resumed_from=resumed_from,
            skipped=None,
            config_yaml=OmegaConf.to_yaml(
                OmegaConf.structured(KVideoConfig(trainer=TrainerConfig(max_steps=8)))
            ),
        )


def _events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    return events


def _text(events: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(f"{tag}/text_summary")]


def test_tensorboard_gets_hparams_config_text_predictions_and_final_metrics(tmp_path: Path) -> None:
    reporter = _reporter(tmp_path)
    reporter.writer.log(
        {"split": "validation", "step": 8, "val_loss": 0.5, "acc_color": 0.75}, tb_prefix="val"
    )
    reporter.log_predictions(8, ROWS)
    reporter.completed({"status": "completed", "step": 8, "val_loss": 0.5, "wall_time_s": 3.0})
    reporter.close()

    events = _events(tmp_path)
    hparams = events.PluginTagToContent("hparams")
    # A session per run and no experiment summary: the dashboard then compares every run.
    assert set(hparams) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    logged = start.session_start_info.hparams
    assert logged["trainer.max_steps"].number_value == 8
    assert logged["trainer.lr"].number_value == TrainerConfig().lr
    assert logged["video.dataset_type"].string_value == KVideoConfig().video.dataset_type
    assert "trainer.loggers" not in logged  # a list, not a scalar leaf
    end = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_end_info"])
    assert end.session_end_info.status == 1  # STATUS_SUCCESS

    ((step, config_text),) = _text(events, "config")
    assert step == 0 and config_text.startswith("```yaml\n") and "  max_steps: 8\n" in config_text
    ((step, table),) = _text(events, "val/predictions")
    assert step == 8
    assert table.splitlines() == [
        "| video | reference | generated |",
        "|---|---|---|",
        "| clips/a.mp4 | a red circle moves left | a red circle |",
        "| clips/b.mp4 | a blue \\| square | a blue square |",
    ]
    assert [(s.step, s.value) for s in events.Scalars("val/acc_color")] == [(8, 0.75)]
    assert [(s.step, s.value) for s in events.Scalars("final/val_loss")] == [(8, 0.5)]

    assert read_jsonl(tmp_path / "predictions_val.jsonl") == [{"step": 8, **row} for row in ROWS]


def test_predictions_are_written_by_rank_zero_and_cut_back_on_resume(tmp_path: Path) -> None:
    other_rank = _reporter(tmp_path / "rank1", is_main=False)
    other_rank.log_predictions(4, ROWS)
    other_rank.close()
    assert not (tmp_path / "rank1").exists()

    first = _reporter(tmp_path)
    first.log_predictions(4, ROWS[:1])
    first.log_predictions(8, ROWS[1:])
    first.close()
    # Resumed from the step-4 checkpoint: step 8 is done again, so its old rows go.
    resumed = _reporter(tmp_path, resumed_from=4)
    assert [r["step"] for r in read_jsonl(tmp_path / "predictions_val.jsonl")] == [4]
    resumed.log_predictions(8, ROWS)
    resumed.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "predictions_val.jsonl")] == [4, 8, 8]
    # The resumed launch states its config at the step it restarted from.
    assert [step for step, _ in _text(_events(tmp_path), "config")] == [0, 4]


def test_a_prediction_row_without_a_column_names_it(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, enabled=True)
    with pytest.raises(ValueError, match=r"prediction row without \['generated'\]"):
        writer.log_predictions(1, [{"video": "a.mp4", "reference": "x"}])
    writer.close()


def test_no_loggers_writes_only_the_run_files(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, enabled=True, loggers=[])
    writer.write_config("trainer:\n  max_steps: 3\n")
    writer.log({"step": 1, "loss": 2.0}, tb_prefix="train")
    writer.close()
    assert not (tmp_path / "tb").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.0}


def test_markdown_table_keeps_one_row_per_prediction() -> None:
    rows: list[dict[str, Any]] = [{"a": "x|y", "b": "two\nlines"}, {"a": 3}]
    assert markdown_table(rows, ["a", "b"]).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| x\\|y | two lines |",
        "| 3 |  |",
    ]


def test_scalar_leaves_flatten_mappings_and_drop_lists_and_none() -> None:
    tree = {"a": {"b": 1, "c": [1, 2], "d": None, "e": {"f": "x"}}, "g": True, "h": 0.5}
    assert scalar_leaves(tree) == {"a.b": 1, "a.e.f": "x", "g": True, "h": 0.5}


def test_the_config_accepts_exactly_the_trackers_kvideo_can_open() -> None:
    assert set(LOGGERS) == set(LOGGER_TYPES)
