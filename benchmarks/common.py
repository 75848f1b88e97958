"""Helpers shared by the benchmarks: memory probes, machine description, results I/O.

Kept dependency-light (stdlib, plus torch/decord/av imported only to read their versions)
so every benchmark records the same facts in the same shape.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from kvideo.markdown import markdown_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# ``--quick`` smoke runs write here (git-ignored with the corpus), never over real results.
QUICK_RESULTS_DIR = Path(__file__).resolve().parent / ".corpus" / "results_quick"


def results_dir(quick: bool, out: str | Path | None = None) -> Path:
    """Where results go: ``out`` if given, else the quick folder or ``benchmarks/results``."""
    if out:
        return Path(out)
    return QUICK_RESULTS_DIR if quick else RESULTS_DIR


def add_selection_args(parser: ArgumentParser) -> None:
    """``--clips N`` and ``--out DIR``, shared by the benchmarks (smoke runs use both)."""
    parser.add_argument(
        "--clips",
        type=int,
        default=None,
        help="only N clips, taken round-robin over the GOP classes (smoke runs)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results folder (default: benchmarks/results, or the quick folder with --quick)",
    )


def _status_kb(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size now (MiB); ``None`` when /proc is unavailable or the process is gone."""
    kb = _status_kb("VmRSS", pid)
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) so the next reading covers one method only.

    Linux >= 4.0 supports writing ``5`` to ``/proc/self/clear_refs``; without it the peak is
    the process-wide one (``ru_maxrss``) and per-method peaks are not separable.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak RSS (MiB) since the last ``reset_peak_rss`` (or since start)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on (recorded in every result file)."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for module in ("torch", "decord", "av", "numpy"):
        try:
            versions[module] = str(__import__(module).__version__)
        except Exception as e:  # a missing optional module is itself worth recording
            versions[module] = f"unavailable ({type(e).__name__})"
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(mem_gib, 1),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


def write_result(name: str, data: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` atomically (a crashed run never leaves half a file)."""
    folder = results_dir or RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain Markdown table (readable in a terminal, pasteable into an issue)."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    return markdown_table(headers, ([fmt(v) for v in row] for row in rows), aligned=True)
