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
  difference look like a trend;
* other final metrics (``val_loss``) start at 0, and each point carries the run-to-run scale
  where the job has one: the standard deviation of its last ``NOISE_POINTS`` validations
  (an auto-zoomed 0.098-0.104 axis made a 0.005 single-seed difference look large). A panel
  without it says so in its title;
* the training loss is drawn on a log axis, beside the validation loss and, when validation
  computed them, the accuracies against the step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

if TYPE_CHECKING:
    from kvideo.tools.sweep_jobs import JobOutcome

ACCURACY_PREFIX = "acc_"
CHANCE_PREFIX = "chance_"
PANEL_SIZE = (4.2, 3.6)  # inches per panel: three panels fit a laptop screen at dpi 110
# A job's run-to-run scale: the spread of its last validations, where training has flattened.
NOISE_POINTS = 3


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


def run_to_run_sd(job: JobOutcome, metric: str) -> float | None:
    """The standard deviation of ``job``'s last ``NOISE_POINTS`` values of ``metric`` in its
    validation curve (None with fewer): the scale below which two single-seed jobs' final values
    do not differ."""
    points = [value for _, value in job.val_curves.get(metric, [])][-NOISE_POINTS:]
    if len(points) < NOISE_POINTS:
        return None
    mean = sum(points) / len(points)
    return math.sqrt(sum((p - mean) ** 2 for p in points) / (len(points) - 1))


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
        _final_metric_panel(panel, ok, axes, x_key, axis, metric)
    failed = len(jobs) - len(ok)
    fig.suptitle(f"{title}: final metrics" + (f" ({failed} failed/incomplete, no point)" if failed else ""))
    return fig


def _final_metric_panel(
    panel: Axes, ok: Sequence[JobOutcome], axes: Sequence[str], x_key: str, axis: SweepAxis, metric: str
) -> None:
    groups: dict[str, list[tuple[str, float, float | None]]] = {}
    for job in ok:
        if metric in job.metrics:
            label = _group_label(job, axes[1:]) or metric
            x = job.overrides.get(x_key, job.num)
            groups.setdefault(label, []).append((x, job.metrics[metric], run_to_run_sd(job, metric)))
    with_noise = any(sd is not None for points in groups.values() for _, _, sd in points)
    for label, points in groups.items():
        if axis.positions is not None:
            points.sort(key=lambda p: _as_number(p[0]) or 0.0)
        xs, ys = [_x_of(x, axis) for x, _, _ in points], [y for _, y, _ in points]
        if with_noise:
            bars = [sd or 0.0 for _, _, sd in points]
            panel.errorbar(xs, ys, yerr=bars, marker="o", capsize=3, label=label)
        else:
            panel.plot(xs, ys, marker="o", label=label)
    _apply_sweep_axis(panel, axis)
    if metric.startswith(ACCURACY_PREFIX):
        panel.set_ylim(0.0, 1.0)
        chance_key = CHANCE_PREFIX + metric.removeprefix(ACCURACY_PREFIX)
        for chance in sorted({j.metrics[chance_key] for j in ok if chance_key in j.metrics}):
            panel.axhline(chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({chance:.2g})")
    elif all(y >= 0 for points in groups.values() for _, y, _ in points):
        panel.set_ylim(bottom=0.0)
    panel.set_xlabel(x_key)
    scale = f"bars: sd of each job's last {NOISE_POINTS} validations" if with_noise else "one run per point"
    panel.set_title(f"{metric}\n({scale})", fontsize=9)
    panel.grid(alpha=0.3)
    if len(groups) > 1 or metric.startswith(ACCURACY_PREFIX):
        panel.legend(fontsize=7)


def _two_and_five(value: float, _position: int) -> str:
    leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:g}" if leading in (2, 5) else ""


def loss_curves_figure(jobs: Sequence[JobOutcome], axes: Sequence[str], title: str) -> Figure:
    """Training loss (log axis), validation loss and each accuracy the validation computed,
    against the step, one line per job (same colour in every panel), labelled with the job's
    swept overrides. Failed and unfinished jobs are drawn too, as far as they got: a curve that
    diverges says why a job failed."""
    accuracies = sorted({m for job in jobs for m in job.val_curves if m.startswith(ACCURACY_PREFIX)})
    count = 2 + len(accuracies)
    fig = Figure(figsize=(count * PANEL_SIZE[0] + 1.6, PANEL_SIZE[1]), layout="constrained")
    train_panel, val_panel, *acc_panels = fig.subplots(1, count)
    for index, job in enumerate(jobs):
        label = _job_label(job, axes)
        colour = f"C{index % 10}"
        if job.train_loss:
            steps, losses = zip(*job.train_loss, strict=True)
            train_panel.plot(steps, losses, color=colour, linewidth=1, label=label)
        for panel, metric in ((val_panel, "val_loss"), *zip(acc_panels, accuracies, strict=True)):
            if job.val_curves.get(metric):
                steps, values = zip(*job.val_curves[metric], strict=True)
                panel.plot(steps, values, color=colour, marker="o", markersize=3, label=label)
    if all(y > 0 for job in jobs for _, y in job.train_loss) and train_panel.lines:
        train_panel.set_yscale("log")
        # Plain-text labels (the default's mathtext 10^-1 needs fonts a cluster node may lack),
        # the minor ones at 2x and 5x each power of ten.
        train_panel.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        train_panel.yaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    for panel in acc_panels:
        panel.set_ylim(0.0, 1.0)
    names = ["train loss (log)" if train_panel.get_yscale() == "log" else "train loss", "val_loss"]
    for panel, name in zip((train_panel, val_panel, *acc_panels), [*names, *accuracies], strict=True):
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
    fig.suptitle(f"{title}: curves")
    return fig
