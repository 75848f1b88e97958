"""The sweep report reads job folders as Hydra lays them out; failed jobs get a row. It runs as
``python -m kvideo.sweep_report`` and as the installed ``kvideo-sweep-report``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kvideo.tools.sweep_report import build_report


def make_job(sweep: Path, num: int, overrides: list[str], final: dict | None = None, error: str = "") -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if final is not None:
        (job / "final.json").write_text(json.dumps(final))
    if error:
        (job / "failed.json").write_text(json.dumps({"error": error}))


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
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("| job | video.max_frames | status | val_loss | acc_direction |")
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


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
