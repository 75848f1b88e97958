"""The sweep report's two figures: final metrics against the swept value, and every job's loss
curves. Built as matplotlib ``Figure`` objects (no pyplot, no global state) so callers save
them and tests read their axes.

Axis rules, chosen so a plot cannot suggest a trend that is not there:

* a numeric sweep axis has exactly the swept values as ticks, labelled as typed on the command
  line (``video.max_frames=1,4`` reads 1 and 4, never 1.0, 1.5, ... 4.0);
* when each swept value is a power-of-two multiple of the previous one (1, 2, 4, 8, ...) the
  axis is log2, so the doublings are evenly spaced;
* accuracies (``acc_*``) are drawn on a fixed 0-1 axis with the dashed chance level
  (``chance_<attr>`` of the final metrics): an auto-zoomed 0.335-0.357 axis makes a one-clip
  difference look like a trend.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

if TYPE_CHECKING:
    from kvideo.tools.sweep_jobs import JobOutcome

ACCURACY_PREFIX = "acc_"
CHANCE_PREFIX = "chance_"
PANEL_SIZE = (4.2, 3.6)  # inches per panel: three panels fit a laptop screen at dpi 110


@dataclass(frozen=True)
class SweepAxis:
    """How a sweep axis is drawn: numeric values (``positions``) with the typed text as tick
    labels, or categories (``positions`` is ``None``) in command-line order."""

    labels: list[str]
    positions: list[float] | None
    log2: bool = False


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _power_of_two_steps(values: Sequence[float]) -> bool:
    """Positive, and each value a power-of-two multiple (2, 4, 8, ...) of the one before."""
    if len(values) < 2 or values[0] <= 0:
        return False
    for low, high in itertools.pairwise(values):
        octaves = math.log2(high / low)
        if octaves < 1 or not math.isclose(octaves, round(octaves), abs_tol=1e-9):
            return False
    return True


def sweep_axis(texts: Sequence[str]) -> SweepAxis:
    """The axis for the swept values ``texts`` (override values as typed, any order, repeats
    allowed): numeric when every value parses as a number, else categorical."""
    unique = list(dict.fromkeys(texts))
    numbers = {text: _as_number(text) for text in unique}
    if not unique or any(n is None for n in numbers.values()):
        return SweepAxis(labels=unique, positions=None)
    by_value: dict[float, str] = {}
    for text, number in numbers.items():
        assert number is not None  # checked above
        by_value.setdefault(number, text)  # "4" and "4.0": one tick, labelled as first typed
    positions = sorted(by_value)
    return SweepAxis(
        labels=[by_value[p] for p in positions], positions=positions, log2=_power_of_two_steps(positions)
    )


def _apply_sweep_axis(panel: Axes, axis: SweepAxis) -> None:
    if axis.positions is None:
        return  # matplotlib's categorical axis: one tick per category already
    if axis.log2:
        panel.set_xscale("log", base=2)
    panel.set_xticks(axis.positions, labels=axis.labels)
    panel.xaxis.set_minor_locator(NullLocator())
    if len(axis.positions) == 1:  # a lone point: keep it off the panel's edges
        value = axis.positions[0]
        panel.set_xlim(value / 2, value * 2) if axis.log2 else panel.set_xlim(value - 1, value + 1)


def _x_of(text: str, axis: SweepAxis) -> Any:
    return text if axis.positions is None else _as_number(text)


def _group_label(job: JobOutcome, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={job.overrides.get(k)}" for k in keys)


def _job_label(job: JobOutcome, axes: Sequence[str]) -> str:
    """Unique (the job number, as in the table's ``job`` column) and saying what was swept."""
    label = " ".join([f"{job.num}:", _group_label(job, axes)]).strip()
    return label if job.status == "ok" else f"{label} ({job.status})"


def plotted_metrics(metrics: Sequence[str]) -> list[str]:
    """Validation metrics (accuracies and ``val_loss``); the first three columns when there are
    none (a sweep of something else)."""
    chosen = [m for m in metrics if m.startswith(ACCURACY_PREFIX) or m == "val_loss"]
    return chosen or list(metrics[:3])


def final_metrics_figure(
    jobs: Sequence[JobOutcome], axes: Sequence[str], metrics: Sequence[str], title: str
) -> Figure:
    """One panel per validation metric: its final value against the first swept key, one line
    per setting of the other swept keys. Failed jobs have no point, but their swept value is
    still a tick (a visible gap says the job is missing, not that the sweep skipped it)."""
    ok = [j for j in jobs if j.status == "ok"]
    x_key = axes[0] if axes else "job"
    axis = sweep_axis([j.overrides.get(x_key, j.num) for j in jobs])
    shown = plotted_metrics(metrics)
    fig = Figure(figsize=(PANEL_SIZE[0] * max(1, len(shown)), PANEL_SIZE[1]), layout="constrained")
    panels = fig.subplots(1, max(1, len(shown)), squeeze=False)[0]
    for panel, metric in zip(panels, shown, strict=False):
        groups: dict[str, list[tuple[str, float]]] = {}
        for job in ok:
            if metric in job.metrics:
                label = _group_label(job, axes[1:]) or metric
                groups.setdefault(label, []).append((job.overrides.get(x_key, job.num), job.metrics[metric]))
        for label, points in groups.items():
            if axis.positions is not None:
                points.sort(key=lambda p: _as_number(p[0]) or 0.0)
            panel.plot([_x_of(x, axis) for x, _ in points], [y for _, y in points], marker="o", label=label)
        _apply_sweep_axis(panel, axis)
        if metric.startswith(ACCURACY_PREFIX):
            panel.set_ylim(0.0, 1.0)
            chance_key = CHANCE_PREFIX + metric.removeprefix(ACCURACY_PREFIX)
            for chance in sorted({j.metrics[chance_key] for j in ok if chance_key in j.metrics}):
                panel.axhline(
                    chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({chance:.2g})"
                )
        panel.set_xlabel(x_key)
        panel.set_title(metric)
        panel.grid(alpha=0.3)
        if len(groups) > 1 or metric.startswith(ACCURACY_PREFIX):
            panel.legend(fontsize=7)
    failed = len(jobs) - len(ok)
    fig.suptitle(f"{title}: {len(ok)} ok" + (f", {failed} failed/incomplete" if failed else ""))
    return fig


def loss_curves_figure(jobs: Sequence[JobOutcome], axes: Sequence[str], title: str) -> Figure:
    """Training loss and validation loss against the step, one line per job (same colour in
    both panels), labelled with the job's swept overrides. Failed and unfinished jobs are drawn
    too, as far as they got: a curve that diverges says why a job failed."""
    fig = Figure(figsize=(2 * PANEL_SIZE[0] + 1.6, PANEL_SIZE[1]), layout="constrained")
    train_panel, val_panel = fig.subplots(1, 2)
    for index, job in enumerate(jobs):
        label = _job_label(job, axes)
        colour = f"C{index % 10}"
        if job.train_loss:
            steps, losses = zip(*job.train_loss, strict=True)
            train_panel.plot(steps, losses, color=colour, linewidth=1, label=label)
        if job.val_loss:
            steps, losses = zip(*job.val_loss, strict=True)
            val_panel.plot(steps, losses, color=colour, marker="o", markersize=3, label=label)
    for panel, name in ((train_panel, "train loss"), (val_panel, "val_loss")):
        panel.set_title(name)
        panel.set_xlabel("step")
        panel.grid(alpha=0.3)
        if not panel.lines:
            panel.text(
                0.5, 0.5, "no metrics.jsonl records", ha="center", va="center", transform=panel.transAxes
            )
    legend: dict[str, Any] = {}  # one entry per job, from whichever panel has its line
    for panel in (val_panel, train_panel):
        handles, labels = panel.get_legend_handles_labels()
        legend.update(zip(labels, handles, strict=True))
    if legend:
        ordered = [label for label in (_job_label(j, axes) for j in jobs) if label in legend]
        fig.legend([legend[k] for k in ordered], ordered, loc="outside right upper", fontsize=7)
    fig.suptitle(f"{title}: loss curves")
    return fig
