"""Scan a dataset before training: ``kvideo-validate [options] [hydra overrides]``
(or ``python -m kvideo.validate``).

Composes the project's config exactly as ``train.py`` does (same ``conf/``, found by
``kvideo.config.compose.find_config_dir``; same overrides; same ``to_validated``), builds the rows
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

Why not ``multiprocessing.Pool``: a probe can hang forever inside FFmpeg (a FIFO behind an
``ffconcat`` file) or crash the process (a segfault on a malicious file). A Pool worker that
hangs holds its task forever, and one that dies loses its task, so ``imap`` never finishes.
Here each worker process gets a chunk of paths and streams back one result per path; the
parent knows which path each worker is on and since when, kills a worker that overruns
``--timeout`` (reason ``timeout``) or notices one that died (reason ``decode_error``, with the
exit signal), and starts a fresh worker for the rest of its chunk.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

from kvideo.config.compose import CONFIG_DIR_ENV, ConfigDirNotFound, compose_config
from kvideo.data.blocklist import BLOCKLIST_NAME, write_blocklist
from kvideo.data.rows import ClipRow
from kvideo.files import write_text_atomic
from kvideo.preflight.frames import frame_resize
from kvideo.registry import DATASETS
from kvideo.resize import Resize
from kvideo.resources import usable_cores

REPORT_NAME = "validate_report.jsonl"
SUMMARY_NAME = "validate_summary.json"
CHUNK = 16  # paths per message: amortizes the pipe round trip (~50 us) over ~2-5 ms probes
_READY = -1  # index of the message a worker sends once its decoder is built


# ----------------------------------------------------------------------------- config


def scan_config(overrides: Sequence[str], config_dir: Path | None = None) -> Any:
    """The ``KVideoConfig`` a scan reads with: the config tree plus Hydra-style overrides, composed
    as ``train.py`` composes it, validated without the memory check (a scan trains nothing: no
    batch or model to fit)."""
    from kvideo.preflight import checked

    return checked(compose_config(overrides, config_dir), memory=False)


def dataset_files(cfg: Any) -> tuple[list[ClipRow], int, dict[str, int]]:
    """One row per distinct path (first-seen order) of ``video.split``'s rows, the row count, and
    the rows the listing left out per reason (``ListedRows``: a WebVid video never downloaded)."""
    builder = DATASETS.get(cfg.video.dataset_type)
    rows = builder(cfg.video, cfg.data, split=cfg.video.split, max_samples=cfg.video.max_samples)
    first: dict[str, ClipRow] = {}
    for row in rows:
        first.setdefault(row.path, row)
    return list(first.values()), len(rows), dict(getattr(rows, "left_out", {}))


def _name(target: str | ClipRow) -> str:
    return target.path if isinstance(target, ClipRow) else target


# ----------------------------------------------------------------------------- workers


def _worker_main(conn: Connection, decoder: Any, size: int | Resize | None, frames: int) -> None:
    """Child: probe each path (or row) of each chunk it is sent, one result message per path."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    # A forked child must not enter an OpenMP parallel region the parent already used (GNU
    # libgomp deadlocks; measured: index_select on repeated frame indices hung here after
    # the parent had trained). One intra-op thread runs every op inline, as in DataLoader workers.
    torch.set_num_threads(1)
    from kvideo.tools.probe import Prober

    prober = Prober(decoder, size=size, frames=frames)
    conn.send((_READY, None))  # the parent starts the first path's clock now, not at fork
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for index, target in chunk:
            conn.send((index, prober.probe(target)))


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    todo: collections.deque[tuple[int, str | ClipRow]] = field(default_factory=collections.deque)
    since: float = 0.0  # when the current path (todo[0]) started
    ready: bool = False  # its decoder is built: a death from now on is a probe's doing

    def give(self, chunk: list[tuple[int, str | ClipRow]]) -> None:
        self.todo.extend(chunk)
        self.since = time.monotonic()
        self.conn.send(chunk)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


def _failure(path: str, reason: str, detail: str) -> dict[str, Any]:
    return {
        "path": path,
        "ok": False,
        "reason": reason,
        "detail": detail,
        "duration": None,
        "fps": None,
        "num_frames": None,
        "width": None,
        "height": None,
        "codec": None,
        "probe_s": None,
    }


def probe_all(
    paths: Sequence[str | ClipRow],
    *,
    workers: int,
    timeout_s: float,
    decoder: Any = None,
    size: int | Resize | None = None,
    frames: int = 1,
) -> Iterator[dict[str, Any]]:
    """Probe ``paths`` (file paths, or dataset rows: ``Prober.probe``) on ``workers`` supervised
    processes; yields records (with ``index``) in completion order. A path that overruns
    ``timeout_s`` or kills its worker still yields exactly one record. ``decoder`` (a
    ``DecoderConfig``; default ``decord_cpu``), ``size`` and ``frames`` are what each probe
    decodes with (see ``kvideo.tools.probe.Prober``)."""
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context("spawn")
    # torch + decord imported once here, so forked workers start in milliseconds.
    import kvideo.decode.decord_decoder  # noqa: F401

    pending = collections.deque((i, p) for i, p in enumerate(paths))
    pool: list[_Worker] = []

    def spawn() -> _Worker:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, decoder, size, frames), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def feed(w: _Worker) -> None:
        chunk = [pending.popleft() for _ in range(min(CHUNK, len(pending)))]
        if chunk:
            w.give(chunk)

    try:
        for _ in range(max(1, min(workers, len(paths)))):
            w = spawn()
            pool.append(w)
            feed(w)
        while any(w.todo for w in pool):
            busy = {w.conn: w for w in pool if w.todo}
            now = time.monotonic()
            soonest = min(w.since + timeout_s for w in busy.values())
            # wait returns the ready subset of what it is given: Connections here
            ready = cast("list[Connection]", wait(list(busy), timeout=max(0.0, soonest - now)))
            for conn in ready:
                w = busy[conn]
                try:
                    index, record = conn.recv()
                except (EOFError, OSError):
                    if not w.ready:  # not a file's fault: every worker would die the same way
                        why = _death(w)
                        raise RuntimeError(f"kvideo.validate: a probe worker did not start: {why}") from None
                    yield from _replace(w, pool, spawn, pending, "decode_error", _death(w))
                    continue
                w.since = time.monotonic()
                if index == _READY:
                    w.ready = True
                    continue
                w.todo.popleft()
                yield {"index": index, **record}
                if not w.todo:
                    feed(w)
            now = time.monotonic()
            for w in list(pool):
                if w.todo and now - w.since > timeout_s and w.conn not in ready:
                    detail = f"no result after {timeout_s:g} s"
                    yield from _replace(w, pool, spawn, pending, "timeout", detail)
    finally:
        for w in pool:
            if w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in pool:
            w.proc.join(timeout=2)
            w.kill()


def _death(w: _Worker) -> str:
    w.proc.join(timeout=5)
    code = w.proc.exitcode
    if code is not None and code < 0:
        return f"probe process died ({signal.Signals(-code).name})"
    return f"probe process died (exit code {code})"


def _replace(
    w: _Worker,
    pool: list[_Worker],
    spawn: Callable[[], _Worker],
    pending: collections.deque[tuple[int, str | ClipRow]],
    reason: str,
    detail: str,
) -> Iterator[dict[str, Any]]:
    """Kill ``w``, report its current path as ``reason``, requeue the rest of its chunk on a
    fresh worker."""
    index, target = w.todo.popleft()
    rest = list(w.todo)
    w.kill()
    pool.remove(w)
    yield {"index": index, **_failure(_name(target), reason, detail)}
    pending.extendleft(reversed(rest))
    if pending:
        fresh = spawn()
        pool.append(fresh)
        fresh.give([pending.popleft() for _ in range(min(CHUNK, len(pending)))])


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
    with open(out / REPORT_NAME, "w") as report:
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
        "video.split=validation",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (as for train.py)")
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
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = scan_config(args.overrides, args.config_dir)
    except ConfigDirNotFound as e:
        print(f"kvideo.validate: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # hydra composition errors and to_validated's ValueError alike
        print(f"kvideo.validate: invalid config: {e}", file=sys.stderr)
        return 2
    try:
        files, rows, left_out = dataset_files(cfg)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"kvideo.validate: cannot read the dataset: {e}", file=sys.stderr)
        return 2
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
        dataset_type=cfg.video.dataset_type,
        data_root=cfg.video.data_root,
        split=cfg.video.split,
        workers=args.workers,
        timeout_s=timeout_s,
        frames=frames,
        size=dataclasses.asdict(size) if isinstance(size, Resize) else size,
        left_out=left_out,
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
