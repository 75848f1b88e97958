"""Probe many files in supervised worker processes: ``probe_all`` (``kvideo-validate``'s engine).

Why not ``multiprocessing.Pool``: a probe can hang forever inside FFmpeg (a FIFO behind an
``ffconcat`` file) or crash the process (a segfault on a malicious file). A Pool worker that
hangs holds its task forever, and one that dies loses its task, so ``imap`` never finishes.
Here each worker process gets a chunk of paths and streams back one result per path; the
parent knows which path each worker is on and since when, kills a worker that overruns
``--timeout`` (reason ``timeout``) or notices one that died (reason ``decode_error``, with the
exit signal), and starts a fresh worker for the rest of its chunk.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from kvideo.data.rows import ClipRow
from kvideo.resize import Resize
from kvideo.tools.probe import failed_record

CHUNK = 16  # paths per message: amortizes the pipe round trip (~50 us) over ~2-5 ms probes
_READY = -1  # index of the message a worker sends once its decoder is built


def _name(target: str | ClipRow) -> str:
    return target.path if isinstance(target, ClipRow) else target


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
    # torch + decord imported once here, so forked workers start in milliseconds.
    import kvideo.decode.decord_decoder  # noqa: F401

    pool = _Pool(paths, (decoder, size, frames))
    try:
        for _ in range(max(1, min(workers, len(paths)))):
            pool.feed(pool.spawn())
        while any(w.todo for w in pool.workers):
            busy = {w.conn: w for w in pool.workers if w.todo}
            soonest = min(w.since + timeout_s for w in busy.values())
            # wait returns the ready subset of what it is given: Connections here
            ready = cast("list[Connection]", wait(list(busy), timeout=max(0.0, soonest - time.monotonic())))
            for conn in ready:
                yield from pool.receive(busy[conn])
            yield from pool.time_outs(timeout_s, ready)
    finally:
        pool.shut_down()


class _Pool:
    """The workers, and the paths no worker has been given yet."""

    def __init__(
        self, paths: Sequence[str | ClipRow], probe_args: tuple[Any, int | Resize | None, int]
    ) -> None:
        self.ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context("spawn")
        self.pending = collections.deque((i, p) for i, p in enumerate(paths))
        self.probe_args = probe_args
        self.workers: list[_Worker] = []

    def spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, *self.probe_args), daemon=True)
        proc.start()
        child.close()
        worker = _Worker(proc, parent)
        self.workers.append(worker)
        return worker

    def feed(self, w: _Worker) -> None:
        chunk = [self.pending.popleft() for _ in range(min(CHUNK, len(self.pending)))]
        if chunk:
            w.give(chunk)

    def receive(self, w: _Worker) -> Iterator[dict[str, Any]]:
        """The message ``w`` sent: its decoder is ready, or a path's record; or its death."""
        try:
            index, record = w.conn.recv()
        except (EOFError, OSError):
            if not w.ready:  # not a file's fault: every worker would die the same way
                raise RuntimeError(f"kvideo.validate: a probe worker did not start: {_death(w)}") from None
            yield from self.replace(w, "decode_error", _death(w))
            return
        w.since = time.monotonic()
        if index == _READY:
            w.ready = True
            return
        w.todo.popleft()
        yield {"index": index, **record}
        if not w.todo:
            self.feed(w)

    def time_outs(self, timeout_s: float, ready: list[Connection]) -> Iterator[dict[str, Any]]:
        """Replace each worker whose current path overran ``timeout_s``."""
        now = time.monotonic()
        for w in list(self.workers):
            if w.todo and now - w.since > timeout_s and w.conn not in ready:
                yield from self.replace(w, "timeout", f"no result after {timeout_s:g} s")

    def replace(self, w: _Worker, reason: str, detail: str) -> Iterator[dict[str, Any]]:
        """Kill ``w``, report its current path as ``reason``, requeue the rest of its chunk on a
        fresh worker."""
        index, target = w.todo.popleft()
        rest = list(w.todo)
        w.kill()
        self.workers.remove(w)
        yield {"index": index, **failed_record(_name(target), reason, detail)}
        self.pending.extendleft(reversed(rest))
        if self.pending:
            self.feed(self.spawn())

    def shut_down(self) -> None:
        for w in self.workers:
            if w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self.workers:
            w.proc.join(timeout=2)
            w.kill()


def _death(w: _Worker) -> str:
    w.proc.join(timeout=5)
    code = w.proc.exitcode
    if code is not None and code < 0:
        return f"probe process died ({signal.Signals(-code).name})"
    return f"probe process died (exit code {code})"
