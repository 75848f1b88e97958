"""Replace the DataLoader's worker processes after a decode timeout or a worker's death.

Why, for timeouts: decord can block forever inside C code (measured: ``open(2)`` on a FIFO
that an ``ffconcat`` file points to waits in the kernel for a writer that never comes). The
decoder's deadline (``kvideo.decode.deadline``) abandons the stuck call after
``decoder.timeout_s`` and the sample is masked with reason ``timeout``, but the abandoned
thread stays blocked in that worker process for good: its memory, file descriptors and (for a
spinning decode) a core are lost until the process ends, and every further hung file adds one
more.

Why, for deaths: a worker killed by a signal (the kernel's OOM killer, a segfault inside
FFmpeg) made the whole run fail with "DataLoader worker ... exited unexpectedly", without a
checkpoint. Now the workers are replaced and the epoch goes on after the samples already
delivered. Which sample a dead worker was building is read from ``InFlight`` (one shared
slot per worker); a sample whose decode killed a worker twice is skipped from then on with
reason ``worker_crash`` (once could be the OOM killer picking an innocent process).

PyTorch cannot replace one worker of a running DataLoader, so the main process replaces them
all, between batches: after the batch that carries a ``timeout`` sample is delivered (the slot
is masked), or when fetching a batch reports a dead worker, the worker pool is shut down and a
new DataLoader resumes right after the samples already delivered. The sample order depends
only on (seed, epoch) (``kvideo.data.sharding``), so nothing is skipped or seen twice, and
resume-from-checkpoint arithmetic is unchanged.

PyTorch's own SIGCHLD handler would raise the death as an exception at whatever line the main
process happens to run (mid-step, mid-checkpoint); ``_report_deaths_at_next_batch`` hands the
iterator's workers back to its own polling instead (``next()`` notices a dead worker within
``torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL`` = 5 s), so a death surfaces here and only here.

Cost: one worker start-up (about a second) per hung file or death; the batches the old
workers had prefetched are decoded again. With ``num_workers=0`` (and GPU decoding, which
runs in the training process) there is no process to replace: the abandoned thread is left
behind, as before, and a crash ends the process.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_REASON = "timeout"
# Deaths of workers building the same sample before it is skipped as ``worker_crash``.
DEATHS_BEFORE_SKIP = 2


class InFlight:
    """Which dataset index each DataLoader worker is building, in memory the workers share.

    Created in the main process before the workers fork (they inherit the mapping), written by
    the worker around each sample, read by the main process after a worker died.
    """

    IDLE = -1

    def __init__(self, num_workers: int) -> None:
        self._slots = multiprocessing.RawArray("q", [self.IDLE] * max(1, num_workers))

    def mark(self, index: int) -> None:
        """Called in a worker when it starts on ``index`` (nothing outside workers)."""
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None and info.id < len(self._slots):
            self._slots[info.id] = index

    def clear(self) -> None:
        self.mark(self.IDLE)

    def of(self, worker_id: int) -> int:
        return int(self._slots[worker_id])


def _close(it: Iterator[Any]) -> None:
    """Stop a DataLoader iterator's workers now rather than whenever it is collected."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def _report_deaths_at_next_batch(it: Iterator[Any]) -> None:
    """Take the iterator's workers off PyTorch's SIGCHLD check (see the module docstring)."""
    if getattr(it, "_worker_pids_set", False):
        from torch.utils.data._utils import signal_handling

        # re-exported from torch._C with a noqa, not __all__: not visible to mypy --strict
        signal_handling._remove_worker_pids(id(it))  # type: ignore[attr-defined]
        it._worker_pids_set = False  # type: ignore[attr-defined]


def _is_worker_death(error: BaseException) -> bool:
    text = str(error)
    death = "exited unexpectedly" in text or "killed by signal" in text
    return isinstance(error, RuntimeError) and "DataLoader worker" in text and death


def _dead_workers(it: Iterator[Any]) -> list[tuple[int, str]]:
    """(worker id, how it ended) of the iterator's workers that are gone."""
    dead = []
    for worker_id, proc in enumerate(getattr(it, "_workers", [])):
        if proc.is_alive():
            continue
        code = proc.exitcode
        how = signal.Signals(-code).name if code is not None and code < 0 else f"exit code {code}"
        dead.append((worker_id, how))
    return dead


def _wait_for_a_death(it: Iterator[Any], timeout_s: float = 5.0) -> bool:
    """Whether one of the iterator's workers is (or, within ``timeout_s``, becomes) dead."""
    deadline = time.monotonic() + timeout_s
    while not _dead_workers(it):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class WorkerSupervisor:
    """Batches of ``make_loader(0)``, re-opened on fresh workers after a timeout or a death.

    ``make_loader(n)`` must return a loader over the same sample order minus its first ``n``
    samples (the caller's sampler takes ``skip``). Batches need a ``skip_reason`` list, one
    entry per sample (``kvideo.data.clip_dataset`` provides it). ``enabled=False`` (no worker
    processes) passes the first loader through untouched. ``started`` is ``make_loader(0)``
    with its iterator already created (workers already decoding ahead), for callers that
    open the next epoch before the current one ends. A loader's ``in_flight`` attribute
    (``InFlight``, set by the caller) says what its workers are building; ``crashed`` is the
    dataset's set of indices it skips as ``worker_crash``, grown here.
    """

    def __init__(
        self,
        make_loader: Callable[[int], Iterable[dict[str, Any]]],
        *,
        enabled: bool,
        started: tuple[Iterable[dict[str, Any]], Iterator[dict[str, Any]]] | None = None,
        crashed: set[int] | None = None,
    ) -> None:
        self.make_loader = make_loader
        self.enabled = enabled
        self.started = started
        self.crashed = crashed if crashed is not None else set()
        self.deaths: dict[int, int] = {}  # dataset index -> workers that died building it
        self.restarts = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        delivered = 0
        loader, first_iter = self.started if self.started is not None else (self.make_loader(0), None)
        while True:
            in_flight = getattr(loader, "in_flight", None)  # this loader's workers' slots
            it = first_iter if first_iter is not None else iter(loader)
            first_iter = None
            if self.enabled:
                _report_deaths_at_next_batch(it)
            why = ""
            try:
                while True:
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    except RuntimeError as e:
                        if not (self.enabled and _is_worker_death(e)):
                            raise
                        why = self._record_deaths(it, in_flight)
                        break
                    except (ConnectionError, EOFError):
                        # A worker killed right after queueing a batch: the batch's tensors are
                        # shared by file descriptor, fetched from that worker, which is gone
                        # (ConnectionResetError in multiprocessing's resource_sharer). Its
                        # sockets close before it is reaped: wait for it to show as dead.
                        if not (self.enabled and _wait_for_a_death(it)):
                            raise
                        why = self._record_deaths(it, in_flight)
                        break
                    reasons = batch["skip_reason"]
                    delivered += len(reasons)
                    yield batch
                    if self.enabled and TIMEOUT_REASON in reasons:
                        why = "decode timeout in a DataLoader worker"
                        break
            finally:
                _close(it)
                del it
            if not why:
                return
            self.restarts += 1
            loader = self.make_loader(delivered)
            if isinstance(loader, Sized) and len(loader) == 0:
                return
            log.warning(
                "%s: replacing the workers (restart %d of this epoch), resuming after %d samples",
                why,
                self.restarts,
                delivered,
            )

    def _record_deaths(self, it: Iterator[Any], in_flight: InFlight | None) -> str:
        """Count each dead worker's sample; mark those that killed ``DEATHS_BEFORE_SKIP`` workers."""
        parts = []
        for worker_id, how in _dead_workers(it):
            index = in_flight.of(worker_id) if in_flight is not None else InFlight.IDLE
            if index == InFlight.IDLE:
                parts.append(f"worker {worker_id} died ({how}) between samples")
                continue
            self.deaths[index] = self.deaths.get(index, 0) + 1
            if self.deaths[index] >= DEATHS_BEFORE_SKIP:
                self.crashed.add(index)
                parts.append(
                    f"worker {worker_id} died ({how}) on sample {index} again: skipped as worker_crash"
                )
            else:
                parts.append(f"worker {worker_id} died ({how}) on sample {index}")
        return "; ".join(parts) or "a DataLoader worker died"
