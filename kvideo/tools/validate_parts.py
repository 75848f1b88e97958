"""``kvideo-validate --part I/N`` and ``--merge``: one scan split over a SLURM array, then joined.

A 10M-file corpus takes one machine days to probe. ``--part I/N`` (``I`` in ``0 .. N-1``, as
``sbatch --array=0-<N-1>`` numbers its tasks) probes every ``N``-th distinct file of the split,
starting at the ``I``-th: every part lists the same rows in the same order, so the parts are
disjoint and together cover each file once. Each part writes its own report folder;
``kvideo-validate --merge PART_DIR ... --out DIR`` joins them into one report, summary and
blocklist, and refuses parts that are missing, given twice, or from another split into parts.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from kvideo.data.blocklist import BLOCKLIST_NAME, write_blocklist
from kvideo.files import open_new, write_text_atomic

T = TypeVar("T")
PART = re.compile(r"(\d+)/(\d+)")


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``; ``ValueError`` saying what is expected."""
    match = PART.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--part must be I/N, such as 0/10 (got {text!r})")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--part {text}: I must be in 0..N-1 and N >= 1 (got I={index}, N={count})")
    return index, count


def take_part(items: Sequence[T], part: tuple[int, int]) -> list[T]:
    """Part ``I`` of ``N``: every ``N``-th item from the ``I``-th."""
    index, count = part
    return list(items[index::count])


def merge_reports(
    folders: Sequence[Path], out: Path, *, report_name: str, summary_name: str
) -> dict[str, Any]:
    """Join the parts' reports under ``out`` (as one scan writes them); returns the summary."""
    summaries = [_summary(folder, summary_name) for folder in folders]
    _check_parts(folders, summaries)
    out.mkdir(parents=True, exist_ok=True)
    reasons: collections.Counter[str] = collections.Counter()
    bad: list[tuple[str, str]] = []
    ok = 0
    with open_new(out / report_name) as report:
        for folder in folders:
            with open(folder / report_name, encoding="utf-8") as part_report:
                for line in part_report:
                    record = json.loads(line)
                    report.write(line if line.endswith("\n") else line + "\n")
                    if record["ok"]:
                        ok += 1
                    else:
                        reasons[record["reason"]] += 1
                        bad.append((record["path"], record["reason"]))
    blocklist = write_blocklist(out / BLOCKLIST_NAME, bad)
    first = summaries[0]
    summary = {
        key: first[key]
        for key in ("rows", "dataset_type", "data_root", "split", "frames", "size", "left_out")
        if key in first
    } | {
        "files": ok + len(bad),
        "ok": ok,
        "bad": len(bad),
        "reasons": dict(sorted(reasons.items())),
        "blocklist": str(blocklist.resolve()),
        "report": str((out / report_name).resolve()),
        "parts": [str(folder) for folder in folders],
        "elapsed_s": round(sum(s.get("elapsed_s", 0.0) for s in summaries), 3),
    }
    write_text_atomic(out / summary_name, json.dumps(summary, indent=2) + "\n")
    return summary


def _summary(folder: Path, summary_name: str) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads((folder / summary_name).read_text())
    except FileNotFoundError:
        raise ValueError(f"--merge {folder}: no {summary_name} (is it a finished part's --out?)") from None
    except ValueError:
        raise ValueError(f"--merge {folder}: {summary_name} is not JSON") from None
    return summary


def _check_parts(folders: Sequence[Path], summaries: Sequence[dict[str, Any]]) -> None:
    """Every part of one ``N`` exactly once, from the same split of the same data."""
    parts = [tuple(s.get("part") or (0, 1)) for s in summaries]
    counts = {count for _, count in parts}
    if len(counts) > 1:
        raise ValueError(f"--merge: the parts come from different splits into parts (N = {sorted(counts)})")
    (count,) = counts
    seen: dict[int, Path] = {}
    for folder, (index, _) in zip(folders, parts, strict=True):
        if index in seen:
            raise ValueError(f"--merge: part {index}/{count} is given twice ({seen[index]}, {folder})")
        seen[index] = folder
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise ValueError(f"--merge: part(s) {', '.join(f'{i}/{count}' for i in missing)} missing")
    sources = {(s.get("dataset_type"), json.dumps(s.get("data_root")), s.get("split")) for s in summaries}
    if len(sources) > 1:
        raise ValueError(f"--merge: the parts scanned different data ({sorted(sources)})")
