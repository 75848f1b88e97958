"""Run a call with a wall-clock budget on a reusable daemon thread.

decord can hang inside C code (containers that over-report their frame count, damaged
streams); Python cannot interrupt it. The call runs on a worker thread (decord's ctypes
calls release the GIL) and the caller waits at most ``timeout_s``; on timeout the worker is
abandoned, never joined, and the next call gets a fresh one. Daemon threads, unlike
``ThreadPoolExecutor``'s, do not block interpreter exit when one is stuck forever.

One worker per (process, calling thread), shared by all runners: DataLoader workers fork (a
forked child has no copy of the parent's thread, and ``alive()`` notices), and two calling
threads must not queue behind each other's budget. Overhead per call is a queue hand-off,
~50 us.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

R = TypeVar("R")


class DeadlineExceeded(Exception):
    """The call did not finish within its budget (it may still be running)."""


class _Worker:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="kvideo-decode", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller, re-raised there
                fut.set_exception(e)
            del fut, fn, job

    def submit(self, fn: Callable[[], R]) -> Future[R]:
        fut: Future[R] = Future()
        self._jobs.put((fut, fn))
        return fut

    def retire(self) -> None:
        """Let the thread exit once its current (possibly hung) job returns."""
        self._jobs.put(None)

    def alive(self) -> bool:
        return self.pid == os.getpid() and self._thread.is_alive()


# One worker thread per (process, calling thread), shared by every runner: calls from one
# thread run one at a time anyway, and a thread per decoder object leaked one idle thread for
# each decoder ever built (measured: 1061 threads in a test process after ~1300 ``decode_at``
# calls, and a forked DDP test then hung).
_LOCAL = threading.local()


class DeadlineRunner:
    """``run(fn, timeout_s)`` -> ``fn()``, or ``DeadlineExceeded`` after ``timeout_s`` seconds.

    Exceptions raised by ``fn`` propagate unchanged. Stateless (the worker threads are
    per process and calling thread, shared by all runners), so a decoder holding one
    pickles and travels to spawned DataLoader workers.
    """

    @staticmethod
    def _worker() -> _Worker:
        worker: _Worker | None = getattr(_LOCAL, "worker", None)
        if worker is None or not worker.alive():
            worker = _Worker()
            _LOCAL.worker = worker
        return worker

    def run(self, fn: Callable[[], R], timeout_s: float) -> R:
        worker = self._worker()
        fut = worker.submit(fn)
        done = threading.Event()
        fut.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            if fut.cancel():  # still queued: nothing is running, nothing to abandon
                raise DeadlineExceeded(f"not started within {timeout_s:g} s")
            worker.retire()
            _LOCAL.worker = None
            raise DeadlineExceeded(f"no result after {timeout_s:g} s")
        try:
            return fut.result()
        finally:
            del fut  # break the future <-> exception traceback cycle (it would pin fn's locals)
