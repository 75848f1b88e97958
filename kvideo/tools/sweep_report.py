"""Comparison table and plot for a finished (or partly failed) multirun sweep.

Reads each job folder of a sweep dir (``<sweep.dir>/<num>/``): its overrides from
``.hydra/overrides.yaml``, its outcome from ``final.json`` (written by the trainer at
the end) or ``failed.json`` (written by ``train.py`` when a sweep job raises), and
writes ``report.csv``, ``report.md`` and ``report.png`` into the sweep dir.

Also a standalone command, because under submitit the submitting process may die
before Hydra's ``on_multirun_end`` runs: ``kvideo-sweep-report SWEEP_DIR`` (or
``python -m kvideo.sweep_report SWEEP_DIR``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

REPORT_FILES = ("report.csv", "report.md", "report.png")


@dataclass
class JobOutcome:
    """One job's overrides and result, as found on disk."""

    num: str
    overrides: dict[str, str]
    status: str  # "ok" | "failed" | "incomplete"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


def _job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _numeric_items(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten the scalar numbers of a (nested) JSON object: {"skipped": {"missing": 2}}
    becomes {"skipped.missing": 2}."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_numeric_items(value, f"{name}."))
    return out


def read_job(job_dir: Path) -> JobOutcome:
    overrides_list = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    overrides = dict(item.split("=", 1) for item in overrides_list if "=" in item)
    final, failed = job_dir / "final.json", job_dir / "failed.json"
    if final.is_file():
        return JobOutcome(job_dir.name, overrides, "ok", _numeric_items(json.loads(final.read_text())))
    if failed.is_file():
        info = json.loads(failed.read_text())
        return JobOutcome(job_dir.name, overrides, "failed", error=str(info.get("error", "unknown error")))
    return JobOutcome(job_dir.name, overrides, "incomplete", error="no final.json (still running or killed)")


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
    axes, metrics = swept_keys(jobs), metric_columns(jobs)
    header = ["job", *axes, "status", *metrics, "error"]
    rows = []
    for job in jobs:
        values = [_fmt(job.metrics[m]) if m in job.metrics else "" for m in metrics]
        rows.append([job.num, *(job.overrides.get(k, "") for k in axes), job.status, *values, job.error])
    with open(sweep_dir / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = (str(c).replace("|", "\\|").replace("\n", " ") for c in row)
        lines.append("| " + " | ".join(cells) + " |")
    (sweep_dir / "report.md").write_text("\n".join(lines) + "\n")
    return axes, metrics


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def write_plot(jobs: list[JobOutcome], axes: list[str], metrics: list[str], sweep_dir: Path) -> None:
    """Swept value (first axis) against each validation metric; one line per setting of
    the other axes. Failed jobs are absent from the lines but present in the tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [m for m in metrics if m.startswith("acc_") or m == "val_loss"] or metrics[:3]
    ok = [j for j in jobs if j.status == "ok"]
    x_key = axes[0] if axes else "job"
    ncols = max(1, len(plotted))
    fig, panels = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.6), squeeze=False)
    for panel, metric in zip(panels[0], plotted, strict=False):
        groups: dict[str, list[tuple[Any, float]]] = {}
        for job in ok:
            if metric not in job.metrics:
                continue
            label = ", ".join(f"{k}={job.overrides.get(k)}" for k in axes[1:]) or metric
            x_text = job.overrides.get(x_key, job.num)
            groups.setdefault(label, []).append((x_text, job.metrics[metric]))
        for label, points in groups.items():
            numeric = all(_as_number(x) is not None for x, _ in points)
            # numeric: _as_number gave a float (never None) for every x
            points.sort(key=lambda p: cast(float, _as_number(p[0])) if numeric else p[0])
            xs = [_as_number(x) if numeric else x for x, _ in points]
            panel.plot(xs, [y for _, y in points], marker="o", label=label)
        if metric.startswith("acc_") and ok and f"chance_{metric[4:]}" in ok[0].metrics:
            panel.axhline(ok[0].metrics[f"chance_{metric[4:]}"], color="gray", linestyle=":", label="chance")
        panel.set_xlabel(x_key)
        panel.set_title(metric)
        panel.grid(alpha=0.3)
        if len(groups) > 1 or metric.startswith("acc_"):
            panel.legend(fontsize=7)
    failed = len(jobs) - len(ok)
    fig.suptitle(f"{sweep_dir.name}: {len(ok)} ok" + (f", {failed} failed/incomplete" if failed else ""))
    fig.tight_layout()
    fig.savefig(sweep_dir / "report.png", dpi=110)
    plt.close(fig)


def build_report(sweep_dir: str | Path) -> list[JobOutcome]:
    """Write the CSV, Markdown and PNG report for ``sweep_dir``; returns the jobs read."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {str(sweep_dir)!r} does not exist")
    jobs = [read_job(d) for d in _job_dirs(sweep_dir)]
    if not jobs:
        raise FileNotFoundError(f"no job folders (with .hydra/overrides.yaml) under {str(sweep_dir)!r}")
    axes, metrics = write_tables(jobs, sweep_dir)
    write_plot(jobs, axes, metrics, sweep_dir)
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
