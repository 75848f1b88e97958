"""A sweep's jobs as found on disk: each job folder's overrides (``.hydra/overrides.yaml``), its
outcome (``final.json``, or ``failed.json`` when it raised) and its loss curves (``metrics.jsonl``).
The report (``kvideo.tools.sweep_report``) and its figures (``kvideo.tools.sweep_plots``) read them."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

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
    val_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Every numeric validation metric (``val_loss``, ``acc_*``, ...) as (step, value) points."""

    @property
    def val_loss(self) -> list[tuple[int, float]]:
        """(step, validation loss), from ``metrics.jsonl``."""
        return self.val_curves.get("val_loss", [])


def job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _final_numbers(final: dict[str, object]) -> dict[str, float]:
    """The finite numbers of ``final.json`` under dotted keys (``skipped.missing``)."""
    return {key: value for key, value in scalar_leaves(final).items() if _number(value)}


def _curves(job_dir: Path) -> tuple[list[tuple[int, float]], dict[str, list[tuple[int, float]]]]:
    """The training loss points and every validation metric's points of a job's
    ``metrics.jsonl``: training records carry no ``split`` and a ``loss``, validation records
    ``split: validation`` and their metrics; a NaN was written as null and has no point."""
    train: list[tuple[int, float]] = []
    val: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(job_dir / "metrics.jsonl"):
        split = record.get("split", "train")
        if split == "train" and _number(record.get("loss")):
            train.append((int(record["step"]), float(record["loss"])))
        elif split == "validation":
            for key, value in record.items():
                if key not in ("step", "epoch") and not key.endswith("_s") and _number(value):
                    val.setdefault(key, []).append((int(record["step"]), float(value)))
    return train, val


def _number(value: object) -> TypeGuard[int | float]:
    """A finite int or float (a bool is neither here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_job(job_dir: Path) -> JobOutcome:
    overrides_list = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    overrides = dict(item.split("=", 1) for item in overrides_list if "=" in item)
    job = JobOutcome(job_dir.name, overrides, "incomplete", error="no final.json (still running or killed)")
    job.train_loss, job.val_curves = _curves(job_dir)
    final, failed = job_dir / "final.json", job_dir / "failed.json"
    if final.is_file():
        job.status, job.error = "ok", ""
        job.metrics = _final_numbers(json.loads(final.read_text()))
    elif failed.is_file():
        job.status = "failed"
        job.error = str(json.loads(failed.read_text()).get("error", "unknown error"))
    return job


def sweep_title(jobs: list[JobOutcome], axes: list[str]) -> str:
    """What was swept, its values as typed, and how the jobs ended: ``video.max_frames = 4, 8, 16
    (3 jobs: 2 ok, 1 failed)``, the title of the table and of both figures."""
    swept = "; ".join(
        f"{key} = {', '.join(dict.fromkeys(job.overrides.get(key, '-') for job in jobs))}" for key in axes
    )
    ended = Counter(job.status for job in jobs)
    counts = ", ".join(f"{n} {status}" for status, n in ended.items())
    return f"{swept or 'one setting'} ({len(jobs)} job{'s' if len(jobs) != 1 else ''}: {counts})"
