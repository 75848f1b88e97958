"""Comparison table and plots for a finished (or partly failed) multirun sweep.

Reads each job folder of a sweep dir (``<sweep.dir>/<num>/``): its overrides from
``.hydra/overrides.yaml``, its outcome from ``final.json`` (written by the trainer at
the end) or ``failed.json`` (written by ``train.py`` when a sweep job raises), its loss
curves from ``metrics.jsonl``, and writes into the sweep dir ``report.csv`` (every column),
``report.md`` (titled by what was swept; the columns that are the same in every job said once
above the table), ``report.png`` (final metrics against the swept value, with each job's
run-to-run scale) and ``report_curves.png`` (every job's training loss, validation loss and
accuracies against the step). The figures' rules are in ``kvideo.tools.sweep_plots``.

Also a standalone command, because under submitit the submitting process may die
before Hydra's ``on_multirun_end`` runs: ``kvideo-sweep-report SWEEP_DIR`` (or
``python -m kvideo.sweep_report SWEEP_DIR``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from kvideo.files import open_new, write_text_atomic
from kvideo.markdown import markdown_table
from kvideo.tools.sweep_jobs import JobOutcome, job_dirs, read_job, sweep_title
from kvideo.tools.sweep_plots import final_metrics_figure, loss_curves_figure

REPORT_FILES = ("report.csv", "report.md", "report.png", "report_curves.png")
PLOT_DPI = 110


def swept_keys(jobs: list[JobOutcome]) -> list[str]:
    """Override keys whose value differs between jobs (the sweep's axes), in CLI order."""
    keys: list[str] = []
    for job in jobs:
        keys.extend(k for k in job.overrides if k not in keys)
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1] or keys


# Shown first, in this order, when present; other numbers follow alphabetically.
PREFERRED_METRICS = ("val_loss", "acc_color", "acc_shape", "acc_direction", "loss", "step", "wall_time_s")


def metric_columns(jobs: list[JobOutcome]) -> list[str]:
    names = {name for job in jobs for name in job.metrics}
    preferred = [m for m in PREFERRED_METRICS if m in names]
    return preferred + sorted(names - set(preferred))


def write_tables(jobs: list[JobOutcome], sweep_dir: Path) -> tuple[list[str], list[str]]:
    """``report.csv`` holds every column; ``report.md`` (what a researcher reads, and what the
    command prints) leaves out the columns that are the same in every job and says them once
    above the table: a sweep's final.json has ~25 numbers, most of them constant."""
    axes, metrics = swept_keys(jobs), metric_columns(jobs)
    header = ["job", *axes, "status", *metrics, "error"]
    rows = []
    for job in jobs:
        values = [_fmt(job.metrics[m]) if m in job.metrics else "" for m in metrics]
        rows.append([job.num, *(job.overrides.get(k, "") for k in axes), job.status, *values, job.error])
    with open_new(sweep_dir / "report.csv") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    write_text_atomic(sweep_dir / "report.md", markdown_report(jobs, axes, header, rows))
    return axes, metrics


def markdown_report(jobs: list[JobOutcome], axes: list[str], header: list[str], rows: list[list[str]]) -> str:
    """The title, the settings and results shared by every job, then the table of the rest."""
    fixed = {"job", "status", *axes}
    # A failed job has no metrics: a column is the same in every job when its values are.
    values = {i: {row[i] for row in rows if row[i]} for i in range(len(header))}
    same = [i for i, name in enumerate(header) if name not in fixed and len(rows) > 1 and len(values[i]) <= 1]
    shared = [f"{k}={v}" for k, v in _shared_overrides(jobs, axes).items()]
    shared += [f"{header[i]}={next(iter(values[i]))}" for i in same if values[i]]
    keep = [i for i in range(len(header)) if i not in same]
    lines = [f"# {sweep_title(jobs, axes)}", ""]
    if shared:
        lines += [f"Same in every job: {', '.join(shared)}.", ""]
    lines.append(markdown_table([header[i] for i in keep], [[row[i] for i in keep] for row in rows]))
    return "\n".join(lines) + "\n"


def _shared_overrides(jobs: list[JobOutcome], axes: list[str]) -> dict[str, str]:
    """The command line's overrides that every job has with one value (not swept)."""
    keys = dict.fromkeys(k for job in jobs for k in job.overrides if k not in axes)
    return {
        k: jobs[0].overrides[k]
        for k in keys
        if all(k in job.overrides for job in jobs) and len({job.overrides[k] for job in jobs}) == 1
    }


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def write_plots(jobs: list[JobOutcome], axes: list[str], metrics: list[str], sweep_dir: Path) -> None:
    """``report.png`` (final metrics against the swept value) and ``report_curves.png``."""
    title = sweep_title(jobs, axes)
    final_metrics_figure(jobs, axes, metrics, title).savefig(sweep_dir / "report.png", dpi=PLOT_DPI)
    loss_curves_figure(jobs, axes, title).savefig(sweep_dir / "report_curves.png", dpi=PLOT_DPI)


def build_report(sweep_dir: str | Path) -> list[JobOutcome]:
    """Write the CSV, Markdown and PNG reports for ``sweep_dir``; returns the jobs read."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {str(sweep_dir)!r} does not exist")
    jobs = [read_job(d) for d in job_dirs(sweep_dir)]
    if not jobs:
        raise FileNotFoundError(f"no job folders (with .hydra/overrides.yaml) under {str(sweep_dir)!r}")
    axes, metrics = write_tables(jobs, sweep_dir)
    write_plots(jobs, axes, metrics, sweep_dir)
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvideo.sweep_report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. multirun/2026-11-25/10-00-00")
    args = parser.parse_args(argv)
    try:
        jobs = build_report(args.sweep_dir)
    except FileNotFoundError as e:
        print(f"kvideo.sweep_report: {e}", file=sys.stderr)
        return 2
    print((Path(args.sweep_dir) / "report.md").read_text(), end="")
    bad = sum(j.status != "ok" for j in jobs)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
