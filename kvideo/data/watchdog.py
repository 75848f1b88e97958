"""Replace the DataLoader's worker processes after a decode timeout.

Why: decord can block forever inside C code (measured: ``open(2)`` on a FIFO that an
``ffconcat`` file points to waits in the kernel for a writer that never comes). The decoder's
deadline (``kvideo.decode.deadline``) abandons the stuck call after ``decoder.timeout_s`` and
the sample is masked with reason ``timeout``, but the abandoned thread stays blocked in that
worker process for good: its memory, file descriptors and (for a spinning decode) a core are
lost until the process ends, and every further hung file adds one more.

PyTorch cannot replace one worker of a running DataLoader, and a worker that exits by itself
makes the main process fail with "DataLoader worker exited unexpectedly". So the main
process does it, between batches: the batch that carries a ``timeout`` sample is delivered
as usual (the slot is masked), then the whole worker pool is shut down (the stuck thread dies
with its process) and a new DataLoader resumes right after the samples already delivered.
The sample order depends only on (seed, epoch) (``kvideo.data.sharding``), so nothing is
skipped or seen twice, and resume-from-checkpoint arithmetic is unchanged.

Cost: one worker start-up (about a second) per hung file per epoch; the batches the old
workers had prefetched are decoded again. With ``num_workers=0`` (and GPU decoding, which
runs in the training process) there is no process to replace: the abandoned thread is left
behind, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_REASON = "timeout"


def _close(it: Iterator[Any]) -> None:
    """Stop a DataLoader iterator's workers now rather than whenever it is collected."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def restart_on_timeout(
    make_loader: Callable[[int], Iterable[dict[str, Any]]],
    *,
    enabled: bool,
    started: tuple[Iterable[dict[str, Any]], Iterator[dict[str, Any]]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Batches of ``make_loader(0)``; after a batch with a ``timeout`` sample, continue from
    ``make_loader(delivered)`` on fresh workers.

    ``make_loader(n)`` must return a loader over the same sample order minus its first ``n``
    samples (the caller's sampler takes ``skip``). Batches need a ``skip_reason`` list, one
    entry per sample (``kvideo.data.clip_dataset`` provides it). ``enabled=False`` (no worker
    processes) passes the first loader through untouched. ``started`` is ``make_loader(0)``
    with its iterator already created (workers already decoding ahead), for callers that
    open the next epoch before the current one ends.
    """
    delivered = 0
    restarts = 0
    loader, first_iter = started if started is not None else (make_loader(0), None)
    while True:
        it = first_iter if first_iter is not None else iter(loader)
        first_iter = None
        hung = False
        try:
            for batch in it:
                reasons = batch["skip_reason"]
                delivered += len(reasons)
                hung = enabled and TIMEOUT_REASON in reasons
                yield batch
                if hung:
                    break
        finally:
            _close(it)
            del it
        if not hung:
            return
        restarts += 1
        loader = make_loader(delivered)
        if isinstance(loader, Sized) and len(loader) == 0:
            return
        log.warning(
            "decode timeout in a DataLoader worker: replacing the workers (restart %d of this epoch), "
            "resuming after %d samples", restarts, delivered,
        )
