"""Scan a dataset before training: ``kvideo-validate [options] [hydra overrides]``
(or ``python -m kvideo.validate``), or a bare folder of clips or one file:
``kvideo-validate PATH [PATH ...] [options] [hydra overrides]`` (each folder searched recursively
for video files, links not followed; the overrides still set the decoder and frame size).

Composes the project's config exactly as ``train.py`` does (same ``conf/``, found by
``kvideo.config.compose.find_config_dir``; same overrides; same ``config_from``), builds the rows
of ``video.split`` with the configured dataset builder, probes every distinct file in parallel
(``kvideo.tools.probe``: the training decoder, at the
training frame size, ``video.max_frames`` evenly spaced frames; ``--frames``/``--size``
change that; a tar shard's sample is read from its shard as training reads it, and one that
listing already found bad, without its caption or video, is reported under that reason) and
writes, under ``--out``:

* ``validate_report.jsonl``: one record per file (ok, reason, detail, duration, fps, frame
  count, codec, width, height, probe time), in completion order, with the row ``index``; a
  shard sample's ``path`` is the row's (``<shard>#<member>``);
* ``validate_summary.json``: counts per reason, totals, throughput;
* ``blocklist.txt`` (``kvideo.data.blocklist``: JSON lines, lossless for any file name): train
  with ``data.blocklist=<that file>`` and those rows are masked as ``blocklisted`` without ever
  being opened.
``--part I/N`` probes one part of the files and ``--merge`` joins the parts' folders
(``kvideo.tools.validate_parts``): a SLURM array covers a corpus too large for one machine.
The probes run in ``kvideo.tools.probe_pool`` (why not ``multiprocessing.Pool``: there).
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kvideo.config.compose import CONFIG_DIR_ENV, ConfigDirNotFound, compose_config
from kvideo.data.blocklist import BLOCKLIST_NAME, write_blocklist
from kvideo.data.mixture import mixture_rows
from kvideo.data.rows import ClipRow
from kvideo.decode.image import IMAGE_SUFFIXES
from kvideo.errors import one_line
from kvideo.files import open_new, write_text_atomic
from kvideo.preflight.frames import frame_resize
from kvideo.registry import DATASETS
from kvideo.resize import Resize
from kvideo.resources import usable_cores
from kvideo.tools.probe_pool import probe_all
from kvideo.tools.validate_parts import merge_reports, parse_part, take_part

REPORT_NAME = "validate_report.jsonl"
SUMMARY_NAME = "validate_summary.json"


# ----------------------------------------------------------------------------- config


def scan_config(overrides: Sequence[str], config_dir: Path | None = None) -> Any:
    """The ``KVideoConfig`` a scan reads with: the config tree plus Hydra-style overrides, composed
    as ``train.py`` composes it, validated without the memory check (a scan trains nothing: no
    batch or model to fit)."""
    from kvideo.preflight import checked

    return checked(compose_config(overrides, config_dir), memory=False)


# What a bare folder's video files end with (lower case): the containers kvideo's decoders read.
VIDEO_SUFFIXES = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".flv",
    ".ts",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".3gp",
)
# A bare folder's pictures are probed too: training reads them as one-frame clips.
MEDIA_SUFFIXES = VIDEO_SUFFIXES + IMAGE_SUFFIXES


def split_paths(arguments: Sequence[str]) -> tuple[list[Path], list[str]]:
    """``(paths, overrides)``: an argument without ``=`` that names an existing file or folder is
    a path to scan; the rest are Hydra overrides (``model=hf_vlm`` names a group, not a file)."""
    paths, overrides = [], []
    for argument in arguments:
        if "=" not in argument and Path(argument).expanduser().exists():
            paths.append(Path(argument).expanduser())
        else:
            overrides.append(argument)
    return paths, overrides


def path_files(paths: Sequence[Path]) -> list[ClipRow]:
    """One row per video or picture file of ``paths``: a file as given (whatever its suffix), a
    folder's files with a video or picture suffix, recursively, in sorted order; symbolic links
    are not followed (a link loop cannot hang the scan), and a file listed twice is probed once."""
    found: dict[str, ClipRow] = {}
    for path in paths:
        if path.is_file():
            files = [path]
        else:
            files = []
            for folder, dirs, names in os.walk(path, followlinks=False):
                dirs.sort()
                files += [Path(folder) / n for n in sorted(names) if Path(n).suffix.lower() in MEDIA_SUFFIXES]
        for file in files:
            absolute = str(file.resolve())
            found.setdefault(absolute, ClipRow(path=absolute, caption="", clip_id=absolute))
    return list(found.values())


def dataset_files(cfg: Any) -> tuple[list[ClipRow], int, dict[str, int]]:
    """One row per distinct path (first-seen order) of ``video.split``'s rows, a record's further
    visuals each as a row of its own, the row count, and the rows the listing left out per reason
    (``ListedRows``: a WebVid video never downloaded)."""
    video, data = cfg.video, cfg.data
    rows: list[ClipRow]
    if data.mixture:  # the rows of the sources this split reads (as training lists them)
        rows, _ = mixture_rows(video, data, split=video.split, max_samples=video.max_samples)
    else:
        rows = DATASETS.get(video.dataset_type)(video, data, split=video.split, max_samples=video.max_samples)
    first: dict[str, ClipRow] = {}
    for row in rows:
        first.setdefault(row.path, row)
        for path in row.more_visuals:
            first.setdefault(path, ClipRow(path=path, caption=row.caption, clip_id=row.clip_id))
    return list(first.values()), len(rows), dict(getattr(rows, "left_out", {}))


# ----------------------------------------------------------------------------- report


def write_report(
    records: Iterable[dict[str, Any]], out: Path, *, total: int, progress: bool = True
) -> dict[str, Any]:
    """Stream ``records`` into ``out``'s report files; returns the summary."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    reasons: collections.Counter[str] = collections.Counter()
    bad: list[tuple[str, str]] = []  # (path, reason)
    ok = 0
    bar = tqdm(total=total, unit="file", desc="validate", disable=not progress, dynamic_ncols=True)
    with open_new(out / REPORT_NAME) as report:
        for record in records:
            report.write(json.dumps(record) + "\n")
            if record["ok"]:
                ok += 1
            else:
                reasons[record["reason"]] += 1
                bad.append((record["path"], record["reason"]))
            bar.update(1)
            if reasons:
                bar.set_postfix_str(f"bad {sum(reasons.values())}", refresh=False)
    bar.close()
    blocklist = write_blocklist(out / BLOCKLIST_NAME, bad)
    return {
        "files": ok + len(bad),
        "ok": ok,
        "bad": len(bad),
        "reasons": dict(sorted(reasons.items())),
        "blocklist": str(blocklist.resolve()),
        "report": str((out / REPORT_NAME).resolve()),
    }


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvideo.validate",
        description="Probe every video of a configured dataset split; write a report and a blocklist.",
        epilog="Overrides use train.py's syntax, e.g. video/dataset=manifest video.data_root=/data/m.jsonl "
        "video.split=validation. Or name a folder of clips (searched recursively) or a video file.",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="a folder of clips or a video file to scan, and/or Hydra overrides (as for train.py)",
    )
    parser.add_argument("--out", type=Path, default=Path("validate_out"), help="report folder")
    parser.add_argument(
        "--workers", type=int, default=usable_cores(), help="probe processes (default: usable cores)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per file before it counts as 'timeout' (default: decoder.timeout_s)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="evenly spaced frames to decode per file (default: video.max_frames, as "
        "training reads; 1 = open + first frame, the cheapest scan)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="square size to decode at (default: as training reads, video.resize's rule at "
        "video.frame_size; 0 = native size)",
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help=f"folder holding config.yaml (default: ${CONFIG_DIR_ENV}, else ./conf, else the "
        "repository's conf/ beside the package)",
    )
    parser.add_argument(
        "--part",
        default=None,
        help="I/N: probe part I (0..N-1) of N, every N-th file (a SLURM array task: "
        "--part $SLURM_ARRAY_TASK_ID/N); join the parts' --out folders with --merge",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="PART_DIR",
        help="join the report folders of every --part into --out (nothing is probed)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fail-on-bad", action="store_true", help="exit 1 when any file is bad")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1 (got {args.workers})")
    if args.frames is not None and args.frames < 1:
        parser.error(f"--frames must be >= 1 (got {args.frames})")
    if args.size is not None and args.size < 0:
        parser.error(f"--size must be >= 0 (got {args.size})")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be positive (got {args.timeout})")
    if args.part is not None:
        try:
            args.part = parse_part(args.part)
        except ValueError as e:
            parser.error(str(e))
    return args


def merge(args: argparse.Namespace) -> int:
    """``--merge``: the parts' reports joined under ``--out``."""
    try:
        summary = merge_reports(args.merge, args.out, report_name=REPORT_NAME, summary_name=SUMMARY_NAME)
    except (ValueError, OSError) as e:
        print(f"kvideo.validate: {one_line(e)}", file=sys.stderr)
        return 2
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()) or "none"
    print(
        f"kvideo.validate: {len(args.merge)} parts, {summary['files']} files: {summary['ok']} ok, "
        f"{summary['bad']} bad ({reasons}); report in {args.out}/\n"
        f"  train with: data.blocklist={summary['blocklist']}"
    )
    return 1 if args.fail_on_bad and summary["bad"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    paths, args.overrides = split_paths(args.overrides)
    try:
        cfg = scan_config(args.overrides, args.config_dir)
    except ConfigDirNotFound as e:
        print(f"kvideo.validate: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # hydra composition errors and config_from's ValueError alike
        print(f"kvideo.validate: invalid config: {e}", file=sys.stderr)
        return 2
    left_out: dict[str, int] = {}
    try:
        if paths:
            files = path_files(paths)
            rows = len(files)
        else:
            files, rows, left_out = dataset_files(cfg)
    except (ValueError, OSError, KeyError, RecursionError, csv.Error) as e:
        print(f"kvideo.validate: cannot read the dataset: {one_line(e)}", file=sys.stderr)
        return 2
    if paths and not files:
        print(
            f"kvideo.validate: no video files in {', '.join(map(str, paths))} (looked for "
            f"{', '.join(MEDIA_SUFFIXES)})",
            file=sys.stderr,
        )
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"kvideo.validate: --out {args.out}: cannot be a folder ({one_line(e)})", file=sys.stderr)
        return 2
    if args.part is not None:
        files = take_part(files, args.part)
    timeout_s = args.timeout if args.timeout is not None else cfg.decoder.timeout_s
    t0 = time.perf_counter()
    frames = args.frames if args.frames is not None else cfg.video.max_frames
    # As training reads: video.resize's rule (a square of video.frame_size by default).
    rule = frame_resize(cfg.video, cfg.model)
    size: int | Resize | None = rule.frame_size if rule.mode == "square" else rule
    if args.size is not None:
        size = args.size or None
    records = probe_all(
        files, workers=args.workers, timeout_s=timeout_s, decoder=cfg.decoder, size=size, frames=frames
    )
    summary = write_report(records, args.out, total=len(files), progress=not args.no_progress)
    elapsed = time.perf_counter() - t0
    summary.update(
        rows=rows,
        dataset_type="files" if paths else "mixture" if cfg.data.mixture else cfg.video.dataset_type,
        data_root=[str(p) for p in paths] if paths else cfg.video.data_root,
        split=cfg.video.split,
        workers=args.workers,
        timeout_s=timeout_s,
        frames=frames,
        size=dataclasses.asdict(size) if isinstance(size, Resize) else size,
        left_out=left_out,
        part=list(args.part) if args.part else None,
        elapsed_s=round(elapsed, 3),
        files_per_s=round(summary["files"] / elapsed, 1) if elapsed > 0 else None,
    )
    write_text_atomic(args.out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()) or "none"
    listed_out = "".join(f", {v} more rows left out at listing ({k})" for k, v in left_out.items())
    print(
        f"kvideo.validate: {summary['files']} files ({rows} rows{listed_out}) in {elapsed:.1f}s: "
        f"{summary['ok']} ok, {summary['bad']} bad ({reasons}); report in {args.out}/\n"
        f"  train with: data.blocklist={summary['blocklist']}"
    )
    return 1 if args.fail_on_bad and summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
