"""What a run keeps when something unexpected ends it: no crash may cost a checkpoint that
could have been written, and no rank may wait forever for one that died.

* ``StepBoundary``: the state between two optimizer steps (step, data position, RNG states,
  skip counts), taken after every step. A crash in the middle of the next step (a decode
  worker dying, an out-of-memory forward, a bug in validation) has moved the data position and
  the RNG streams but not the weights; a checkpoint of the boundary is then exactly the one
  the uninterrupted run would have written, and a resume from it is exact.
* ``weights_finite``: a crash checkpoint is written only from finite weights.
* ``PeerFailureWatch``: with several ranks, a rank that fails tells the others through the
  process group's store; every rank (the failing one included, whose teardown may itself
  block in a collective) then ends within ``grace_s``, even one blocked in an NCCL collective
  that would otherwise wait for the backend's timeout (10 to 30 minutes).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from kvideo.errors import one_line
from kvideo.train.checkpoint import capture_rng_state
from kvideo.train.distributed import DistEnv
from kvideo.train.report import RUN_LOG
from kvideo.train.stream import DataPosition

if TYPE_CHECKING:
    from kvideo.train.checkpointer import Checkpointer
    from kvideo.train.report import Reporter

log = logging.getLogger(__name__)

# Exit status of a rank ended by the watch: a crash (1), not a preemption (75): the run failed.
EXIT_PEER_FAILED = 1
# How long a rank may take to end once a rank failed: enough for a peer to meet the error in
# its own collective (gloo: at once) and write its logs; far below NCCL's collective timeout.
PEER_FAILURE_GRACE_S = 60.0
_POLL_S = 2.0
_FAILED_KEY = "kvideo/failed"


@dataclass(frozen=True)
class StepBoundary:
    """The training state right after optimizer step ``step`` (what a checkpoint of it holds
    besides the weights, the optimizer and the schedule, which change only inside a step)."""

    step: int
    position: DataPosition
    rng: dict[str, Any]
    skipped: dict[str, int]


def capture_boundary(step: int, position: DataPosition, skipped: dict[str, int]) -> StepBoundary:
    """The boundary after ``step``: call it between steps, where the RNG streams are the ones
    the next step will draw from."""
    return StepBoundary(step, position, capture_rng_state(), dict(skipped))


def weights_finite(model: nn.Module) -> bool:
    """Whether every trainable weight (this rank's shard of it) is finite."""
    for param in model.parameters():
        if not param.requires_grad:
            continue
        local = param.to_local() if isinstance(param, DTensor) else param
        if not bool(torch.isfinite(local.detach()).all()):
            return False
    return True


class PeerFailureWatch:
    """A thread on each rank of a multi-process run that ends the process ``grace_s`` after
    any rank ``announce``s a failure, unless ``stop`` comes first (see the module docstring).

    A store that stops answering means the rank hosting it is gone, which is a failure too.
    Nothing happens in a single process (no store, no thread).
    """

    def __init__(
        self,
        env: DistEnv,
        *,
        store: Any = None,
        grace_s: float = PEER_FAILURE_GRACE_S,
        poll_s: float = _POLL_S,
    ) -> None:
        self.rank = env.rank
        self.grace_s, self.poll_s = grace_s, poll_s
        self._stop = threading.Event()
        self.store = store if store is not None or not env.distributed else _default_store()
        self._thread: threading.Thread | None = None
        if self.store is not None:
            self._thread = threading.Thread(target=self._watch, name="kvideo-peer-failure", daemon=True)
            self._thread.start()

    def announce(self, reason: str) -> None:
        """This rank failed with ``reason``: the first announcement is the one every rank reports."""
        if self.store is None:
            return
        try:
            if not self.store.check([_FAILED_KEY]):
                self.store.set(_FAILED_KEY, f"rank {self.rank}: {reason}")
        except Exception:  # the store's host is gone: the watch ends this rank anyway
            log.debug("could not announce the failure of rank %d", self.rank, exc_info=True)

    def failure(self) -> str | None:
        """The announced failure (``"rank R: reason"``), if a rank announced one."""
        if self.store is None:
            return None
        try:
            return self._read()
        except Exception:
            return None

    def _read(self) -> str | None:
        """The announcement, ``None`` before one; raises when the store does not answer."""
        if not self.store.check([_FAILED_KEY]):
            return None
        return bytes(self.store.get(_FAILED_KEY)).decode(errors="replace")

    def stop(self) -> None:
        """This rank is ending by itself: the watch must not end it."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.poll_s + 1.0)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                why = self._read()
            except Exception:
                why = "the rank that hosts the process group's store is gone"
            if why is None:
                continue
            if self._stop.wait(self.grace_s):
                return
            log.error(
                "rank %d: ending after a failure (%s): it did not end within %.0f s by itself",
                self.rank,
                why,
                self.grace_s,
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(EXIT_PEER_FAILED)


def _default_store() -> Any:
    """The default process group's store (the rendezvous store every rank already reaches)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # a private helper: without it the run keeps the backend's own timeouts
        log.warning("no process-group store to watch: a failed rank may leave the others waiting")
        return None


def checkpoint_after_crash(
    boundary: StepBoundary | None,
    *,
    env: DistEnv,
    checkpointer: Checkpointer,
    report: Reporter,
    model: nn.Module,
) -> dict[str, Any]:
    """After an unexpected error, checkpoint the last step boundary, as preemption would have,
    when that is possible: one process (with several, a checkpoint is a collective and the other
    ranks are elsewhere: the last periodic one is kept), the error not inside the weight update,
    and finite weights. Returns what ``failed.json`` records of it."""
    kept = checkpointer.saved_step
    why_not = None
    if env.distributed:
        why_not = "several ranks: a checkpoint needs all of them"
    elif boundary is None:
        why_not = "the error came during the weight update"
    elif checkpointer.holds(boundary.step):
        return {"step": boundary.step, "written_after_failure": False}
    elif not weights_finite(model):
        why_not = "the weights are not finite"
    if why_not is None and boundary is not None:
        try:
            report.flush_skipped()
            checkpointer.save(boundary.step, boundary.position, boundary.skipped, wait=True, rng=boundary.rng)
        except Exception as e:
            why_not = f"the save failed: {one_line(e)}"
        else:
            report.say(f"checkpointed step {boundary.step} after the failure")
            return {"step": boundary.step, "written_after_failure": True}
    RUN_LOG.warning("no checkpoint written after the failure (%s); the last one is step %s", why_not, kept)
    return {"step": kept if kept >= 0 else None, "written_after_failure": False, "why_not": why_not}
