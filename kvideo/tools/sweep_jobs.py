"""A sweep's jobs as found on disk: each job folder's overrides (``.hydra/overrides.yaml``), its
outcome (``final.json``, or ``failed.json`` when it raised) and its loss curves (``metrics.jsonl``).
The report (``kvideo.tools.sweep_report``) and its figures (``kvideo.tools.sweep_plots``) read them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kvideo.files import read_jsonl
from kvideo.trees import scalar_leaves


@dataclass
class JobOutcome:
    """One job's overrides and result, as found on disk."""

    num: str
    overrides: dict[str, str]
    status: str  # "ok" | "failed" | "incomplete"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean training loss of the log window ending there), from ``metrics.jsonl``."""
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation loss), from ``metrics.jsonl``."""


def job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _final_numbers(final: dict[str, object]) -> dict[str, float]:
    """The finite numbers of ``final.json`` under dotted keys (``skipped.missing``)."""
    return {
        key: value
        for key, value in scalar_leaves(final).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _loss_curves(job_dir: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, validation) loss points of a job's ``metrics.jsonl``: training records carry no
    ``split`` and a ``loss``, validation records ``split: validation`` and a ``val_loss``;
    a NaN was written as null and has no point."""
    train, val = [], []
    for record in read_jsonl(job_dir / "metrics.jsonl"):
        split = record.get("split", "train")
        if split == "train" and isinstance(record.get("loss"), int | float):
            train.append((int(record["step"]), float(record["loss"])))
        elif split == "validation" and isinstance(record.get("val_loss"), int | float):
            val.append((int(record["step"]), float(record["val_loss"])))
    return train, val


def read_job(job_dir: Path) -> JobOutcome:
    overrides_list = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    overrides = dict(item.split("=", 1) for item in overrides_list if "=" in item)
    job = JobOutcome(job_dir.name, overrides, "incomplete", error="no final.json (still running or killed)")
    job.train_loss, job.val_loss = _loss_curves(job_dir)
    final, failed = job_dir / "final.json", job_dir / "failed.json"
    if final.is_file():
        job.status, job.error = "ok", ""
        job.metrics = _final_numbers(json.loads(final.read_text()))
    elif failed.is_file():
        job.status = "failed"
        job.error = str(json.loads(failed.read_text()).get("error", "unknown error"))
    return job
