"""The sweep report reads job folders as Hydra lays them out; failed jobs get a row. Its figures
draw the swept values as they were typed (exact ticks, log2 when they double), accuracies on a
fixed 0-1 axis with the chance level, and every job's loss curves. It runs as
``python -m kvideo.sweep_report`` and as the installed ``kvideo-sweep-report``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.container import ErrorbarContainer

from kvideo.tools.sweep_plots import SweepAxis, final_metrics_figure, loss_curves_figure, sweep_axis
from kvideo.tools.sweep_report import build_report, metric_columns, swept_keys

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_job(
    sweep: Path,
    num: int,
    overrides: list[str],
    final: dict | None = None,
    error: str = "",
    metrics: list[dict] | None = None,
) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if final is not None:
        (job / "final.json").write_text(json.dumps(final))
    if error:
        (job / "failed.json").write_text(json.dumps({"error": error}))
    if metrics is not None:
        (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))


def loss_records(steps: int, val_every: int, scale: float) -> list[dict]:
    """metrics.jsonl as the trainer writes it: a training line per step (no ``split``), a
    validation line every ``val_every`` steps."""
    records: list[dict] = []
    for step in range(1, steps + 1):
        records.append({"step": step, "epoch": 0, "loss": scale * 5 / step, "skipped": {}})
        if step % val_every == 0:
            records.append({"split": "validation", "step": step, "epoch": 0, "val_loss": scale * 4 / step})
    return records


def chance_lines(panel) -> list[float]:
    return [line.get_ydata()[0] for line in panel.get_lines() if line.get_linestyle() == "--"]


def test_table_and_plot_with_a_failed_and_an_unfinished_job(tmp_path: Path) -> None:
    for num, frames in enumerate([1, 2, 4]):
        make_job(
            tmp_path,
            num,
            [f"video.max_frames={frames}", "trainer.max_steps=5"],
            final={
                "val_loss": 2.0 - frames / 10,
                "acc_direction": 0.2 * frames,
                "chance_direction": 0.25,
                "skipped": {"missing": frames},
                "note": "x",
            },
        )
    make_job(tmp_path, 3, ["video.max_frames=8", "trainer.max_steps=5"], error="RuntimeError: boom")
    make_job(tmp_path, 10, ["video.max_frames=16", "trainer.max_steps=5"])

    jobs = build_report(tmp_path)

    assert [j.status for j in jobs] == ["ok", "ok", "ok", "failed", "incomplete"]
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert [r["video.max_frames"] for r in rows] == ["1", "2", "4", "8", "16"]
    assert "trainer.max_steps" not in rows[0]  # not swept: same value everywhere
    assert rows[2]["acc_direction"] == "0.8" and rows[2]["skipped.missing"] == "4"
    assert rows[3]["status"] == "failed" and rows[3]["error"] == "RuntimeError: boom"
    assert rows[4]["status"] == "incomplete"
    md = (tmp_path / "report.md").read_text().splitlines()
    # Titled by what was swept; what every job shares said once, not as columns.
    assert md[0] == "# video.max_frames = 1, 2, 4, 8, 16 (5 jobs: 3 ok, 1 failed, 1 incomplete)"
    assert md[2] == "Same in every job: trainer.max_steps=5, chance_direction=0.25."
    assert md[4] == "| job | video.max_frames | status | val_loss | acc_direction | skipped.missing | error |"
    assert rows[0]["chance_direction"] == "0.25"  # the CSV keeps every column
    for name in ("report.png", "report_curves.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == PNG_MAGIC and len(png) > 5000


def test_doubling_sweep_values_are_the_ticks_of_a_log2_axis_and_accuracy_spans_0_to_1(tmp_path: Path) -> None:
    for num, frames in enumerate([1, 2, 4, 8]):
        final = {"val_loss": 2.0 - frames / 10, "acc_shape": 0.335 + frames / 400, "chance_shape": 1 / 3}
        make_job(tmp_path, num, [f"video.max_frames={frames}"], final=final)
    make_job(tmp_path, 4, ["video.max_frames=16"], error="RuntimeError: boom")
    jobs = build_report(tmp_path)

    fig = final_metrics_figure(jobs, swept_keys(jobs), metric_columns(jobs), "sweep")

    loss_panel, acc_panel = fig.axes
    assert [p.get_title().split("\n")[0] for p in (loss_panel, acc_panel)] == ["val_loss", "acc_shape"]
    # No validation curves: no run-to-run scale, and the panel says so; the loss axis starts at 0.
    assert loss_panel.get_title().endswith("(one run per point)") and loss_panel.get_ylim()[0] == 0.0
    for panel in (loss_panel, acc_panel):
        assert panel.get_xscale() == "log" and panel.xaxis.get_transform().base == 2  # type: ignore[attr-defined]  # a LogTransform
        # Every swept value, the failed job's 16 too (its gap shows), and nothing in between.
        assert list(panel.get_xticks()) == [1, 2, 4, 8, 16]
        assert [t.get_text() for t in panel.get_xticklabels()] == ["1", "2", "4", "8", "16"]
        assert list(panel.get_xticks(minor=True)) == []
    # 0.3375..0.355 would auto-zoom into a "trend"; the axis is fixed at 0-1 with chance dashed.
    assert acc_panel.get_ylim() == (0.0, 1.0)
    assert chance_lines(acc_panel) == [pytest.approx(1 / 3)]
    assert loss_panel.get_ylim()[1] != 1.0 and chance_lines(loss_panel) == []
    (points,) = [line for line in acc_panel.get_lines() if line.get_linestyle() != "--"]
    assert list(np.asarray(points.get_xdata())) == [1, 2, 4, 8]


def test_integer_sweep_values_that_do_not_double_are_linear_ticks_as_typed(tmp_path: Path) -> None:
    for num, (frames, fps) in enumerate([(1, 1), (3, 1), (5, 1), (1, 2), (3, 2), (5, 2)]):
        final = {"val_loss": 1.0 + frames / 10, "acc_color": 0.5, "chance_color": 0.25}
        make_job(tmp_path, num, [f"video.max_frames={frames}", f"video.fps={fps}"], final=final)
    jobs = build_report(tmp_path)

    fig = final_metrics_figure(jobs, swept_keys(jobs), metric_columns(jobs), "sweep")

    for panel in fig.axes:
        assert panel.get_xscale() == "linear"
        assert list(panel.get_xticks()) == [1, 3, 5]
    loss_panel, acc_panel = fig.axes
    labels = [line.get_label() for line in loss_panel.get_lines()]
    assert labels == ["video.fps=1", "video.fps=2"]  # one line per setting of the other axis
    assert chance_lines(acc_panel) == [0.25]


def test_sweep_axis_rules() -> None:
    assert sweep_axis(["4", "1", "4"]) == SweepAxis(labels=["1", "4"], positions=[1.0, 4.0], log2=True)
    assert sweep_axis(["0.5", "1", "2"]).log2
    assert not sweep_axis(["1", "2", "3"]).log2
    assert not sweep_axis(["0", "1", "2"]).log2  # no zero on a log axis
    assert sweep_axis(["2e-3", "0.001"]) == SweepAxis(
        labels=["0.001", "2e-3"], positions=[0.001, 0.002], log2=True
    )
    assert sweep_axis(["uniform", "qwen"]) == SweepAxis(labels=["uniform", "qwen"], positions=None)


def test_loss_curves_have_one_line_per_job_in_each_panel(tmp_path: Path) -> None:
    for num, frames in enumerate([1, 2, 4]):
        make_job(
            tmp_path,
            num,
            [f"video.max_frames={frames}"],
            final={"val_loss": 1.0},
            metrics=loss_records(steps=10, val_every=5, scale=frames),
        )
    # Killed at step 7: its curve goes as far as it got, and its label says so.
    make_job(tmp_path, 3, ["video.max_frames=8"], metrics=loss_records(steps=7, val_every=5, scale=8))
    make_job(tmp_path, 4, ["video.max_frames=16"], error="RuntimeError: boom")  # no metrics.jsonl
    jobs = build_report(tmp_path)

    fig = loss_curves_figure(jobs, swept_keys(jobs), "sweep")

    train_panel, val_panel = fig.axes
    assert [line.get_label() for line in train_panel.get_lines()] == [
        "0: video.max_frames=1",
        "1: video.max_frames=2",
        "2: video.max_frames=4",
        "3: video.max_frames=8 (incomplete)",
    ]
    assert [len(np.asarray(line.get_xdata())) for line in train_panel.get_lines()] == [10, 10, 10, 7]
    assert [list(np.asarray(line.get_xdata())) for line in val_panel.get_lines()] == [[5, 10]] * 3 + [[5]]
    assert list(np.asarray(val_panel.get_lines()[1].get_ydata())) == pytest.approx([2 * 4 / 5, 2 * 4 / 10])
    # The same colour for a job in both panels, and one legend entry per job.
    assert [line.get_color() for line in train_panel.get_lines()] == [
        line.get_color() for line in val_panel.get_lines()
    ]
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 4
    assert (tmp_path / "report_curves.png").read_bytes()[:8] == PNG_MAGIC


def test_command_rebuilds_the_report_and_exits_nonzero_on_failures(tmp_path: Path) -> None:
    make_job(tmp_path, 0, ["video.fps=1"], final={"val_loss": 1.0})
    make_job(tmp_path, 1, ["video.fps=2"], error="ValueError: bad")
    result = subprocess.run(
        [sys.executable, "-m", "kvideo.sweep_report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "| 1 | 2 | failed |" in result.stdout
    assert (tmp_path / "report.png").is_file()


def test_command_on_a_missing_dir_names_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kvideo.sweep_report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "nope' does not exist" in result.stderr


def test_installed_command_is_the_same_tool(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("kvideo-sweep-report")
    if not script.is_file():
        pytest.skip("kvideo is not installed in this environment (pip install -e .)")
    make_job(tmp_path, 0, ["video.fps=1"], final={"val_loss": 1.0})
    result = subprocess.run([str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "| 0 | 1 | ok | 1 |" in result.stdout


def test_final_losses_carry_each_jobs_run_to_run_scale_and_curves_show_accuracy(tmp_path: Path) -> None:
    """A 0.005 difference between single-seed jobs is drawn against each job's own spread over
    its last 3 validations, on an axis from 0; the curves add accuracy against the step, and
    the training loss is on a log axis."""
    for num, frames in enumerate([4, 8]):
        records = loss_records(steps=12, val_every=3, scale=1.0)
        for i, record in enumerate(r for r in records if r.get("split") == "validation"):
            record["val_loss"] = 0.1 + 0.005 * frames / 8 + 0.004 * (i % 2)
            record["acc_color"] = 0.25 + 0.1 * i
        make_job(tmp_path, num, [f"video.max_frames={frames}"], final={"val_loss": 0.1}, metrics=records)
    jobs = build_report(tmp_path)

    (loss_panel,) = final_metrics_figure(jobs, swept_keys(jobs), ["val_loss"], "sweep").axes
    assert loss_panel.get_title() == "val_loss\n(bars: sd of each job's last 3 validations)"
    assert loss_panel.get_ylim()[0] == 0.0
    (bars,) = loss_panel.containers
    assert isinstance(bars, ErrorbarContainer)
    last_three = [0.1025 + 0.004, 0.1025, 0.1025 + 0.004]  # the first job's validations 2-4
    (bottom, top) = bars.lines[2][0].get_segments()[0]  # its bar: [x, y - sd], [x, y + sd]
    assert top[1] - bottom[1] == pytest.approx(2 * np.std(last_three, ddof=1))

    fig = loss_curves_figure(jobs, swept_keys(jobs), "sweep")
    train_panel, _val_panel, acc_panel = fig.axes
    assert train_panel.get_yscale() == "log" and train_panel.get_title() == "train loss (log)"
    assert acc_panel.get_title() == "acc_color" and acc_panel.get_ylim() == (0.0, 1.0)
    assert list(np.asarray(acc_panel.get_lines()[0].get_ydata())) == pytest.approx([0.25, 0.35, 0.45, 0.55])
    assert fig.get_suptitle() == "sweep: curves"
    assert (tmp_path / "report_curves.png").read_bytes()[:8] == PNG_MAGIC
