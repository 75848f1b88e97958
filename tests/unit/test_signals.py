"""``kvideo.train.signals``: a preemption signal sets a flag, and a launcher's own handler runs
after the checkpoint."""

from __future__ import annotations

import os
import signal

import pytest

from kvideo.train import signals


def test_signal_handler_sets_flag_and_chains_after_the_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        signals.clear_request()
        restore = signals.install_signal_handlers([signal.SIGUSR1])
        restore_again = signals.install_signal_handlers([signal.SIGUSR1])  # idempotent, no self-chain
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.checkpoint_requested() and signals.request_reason() == "SIGUSR1"
        assert seen == []  # the launcher's handler (submitit: requeue + exit) waits for the checkpoint
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.run_deferred_handlers()
        assert seen == [signal.SIGUSR1]  # ...then runs, once
        assert not signals.run_deferred_handlers()
        restore_again()
        restore()
        signals.clear_request()
        os.kill(os.getpid(), signal.SIGUSR1)  # our handler is gone: the previous one runs directly
        assert not signals.checkpoint_requested() and len(seen) == 2
        signals.request_checkpoint_and_exit("submitit")
        assert signals.request_reason() == "submitit"
    finally:
        signals.clear_request()
        signal.signal(signal.SIGUSR1, previous)
