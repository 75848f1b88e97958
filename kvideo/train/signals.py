"""Preemption: turn SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT into "checkpoint at the next step
boundary, then exit".

A signal handler must not save a checkpoint itself: it can fire in the middle of an optimizer
step (half-updated weights) or inside a collective (the other ranks would hang). So the
handler only sets a flag; the training loop polls ``checkpoint_requested()`` after each step,
agrees with the other ranks, saves, and returns ``status="preempted"``.

Handlers *chain* to whatever was installed before (submitit installs its own for SIGTERM and
SIGUSR2), so installing ours never clobbers a launcher's behaviour, and ``install`` returns a
function that puts the previous handlers back. The chained handler runs only *after* the
checkpoint is on disk (``run_deferred_handlers``): submitit's USR2 handler requeues the job
and exits the process, which must not happen before the state it resumes from is saved.
Launcher integrations that receive the preemption notice some other way call
``request_checkpoint_and_exit()`` directly.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from kvideo.train.distributed import DistEnv, any_ranks

log = logging.getLogger(__name__)

# Process exit status for "checkpointed because asked to stop; run me again to resume"
# (EX_TEMPFAIL from sysexits.h), distinct from success (0), crashes (1) and bad configs (2).
EXIT_PREEMPTED = 75

# SIGTERM: SLURM preemption / `scontrol requeue` / `scancel`; SIGUSR1: a common `--signal`
# choice; SIGUSR2: submitit's time-limit signal (sent signal_delay_s before the limit);
# SIGINT: Ctrl-C, which checkpoints like the others (a second Ctrl-C stops at once).
DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)

_requested = threading.Event()
_reason: list[str] = []
# (handler, signum) pairs of chained handlers waiting for the checkpoint to be written.
_deferred: list[tuple[Callable[[int, FrameType | None], Any], int]] = []


def request_checkpoint_and_exit(reason: str = "requested") -> None:
    """Ask the training loop to checkpoint at the next step boundary and stop.

    Safe to call from a signal handler or another thread (it only sets a flag).
    """
    if not _requested.is_set():
        _reason[:] = [reason]
    _requested.set()


def checkpoint_requested() -> bool:
    return _requested.is_set()


def request_reason() -> str:
    return _reason[0] if _reason else ""


def clear_request() -> None:
    """Reset the flag (a new ``train()`` call in the same process starts fresh)."""
    _requested.clear()
    _reason.clear()
    _deferred.clear()


def run_deferred_handlers() -> bool:
    """Call the chained handlers of the signals received, now that the checkpoint is saved.

    Returns whether any ran (submitit's requeue handler normally exits the process instead
    of returning).
    """
    pending = list(_deferred)
    _deferred.clear()
    for handler, signum in pending:
        handler(signum, None)
    return bool(pending)


def _make_handler(previous: Any) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _requested.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        request_checkpoint_and_exit(signal.Signals(signum).name)
        if callable(previous) and previous is not signal.default_int_handler:
            if all(h is not previous for h, _ in _deferred):
                _deferred.append((previous, signum))

    handler.kvideo_handler = True  # type: ignore[attr-defined]
    return handler


def install_signal_handlers(signals: Iterable[signal.Signals] = DEFAULT_SIGNALS) -> Callable[[], None]:
    """Install the flag-setting handler on ``signals``, chaining to existing Python handlers.

    Returns a restore function. Outside the main thread (where ``signal.signal`` raises) this
    does nothing and says so: the loop still honours ``request_checkpoint_and_exit()``.
    """
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: preemption signal handlers not installed")
        return lambda: None
    previous: dict[signal.Signals, Any] = {}
    for sig in signals:
        current = signal.getsignal(sig)
        if getattr(current, "kvideo_handler", False):
            continue  # already ours (nested train() calls): do not chain to ourselves
        previous[sig] = current
        signal.signal(sig, _make_handler(current))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    return restore


def stop_agreed(env: DistEnv, *, log_step: bool) -> bool:
    """Whether every rank checkpoints and stops after this step.

    A signal may reach one rank only, or the ranks during different steps, and they must stop
    after the same one: they agree through an all-reduce of the flag. That happens at log steps
    only (``log_step``, where the reporter runs its collectives anyway): per step it would add a
    collective, and under NCCL a wait for the GPU to catch up, to every step of every run, for an
    event that comes once. The delay is safe because the handler only sets a flag and nothing is
    lost while it waits: the steps in between train normally and the checkpoint covers them. What
    it costs is time, at most ``trainer.log_every - 1`` steps: SLURM sends SIGTERM ``KillWait``
    (30 s by default) before SIGKILL and submitit its USR2 90 s before the time limit, so keep
    ``log_every`` times the step time plus one checkpoint write under those (the default 20 steps
    at ~0.3 s on the CPU take 6 s). One process needs no agreement and checks every step.
    """
    if not env.distributed:
        return checkpoint_requested()
    if not log_step:
        return False
    return any_ranks([checkpoint_requested()], env)[0]
