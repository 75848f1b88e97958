"""A bound on how long one step of start-up may take, for input that can be made to run for
ever: a model folder's chat template is a Jinja program, and one with nested
``range(100000)`` loops renders for hours inside transformers' sandbox, which bounds each range
but not their product.

``SIGALRM`` interrupts the work in the main thread; elsewhere (a DataLoader worker thread) the
step runs unbounded, as it would without kvideo.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TimeLimitExceeded(ValueError):
    """The bounded step ran past its limit (a ``ValueError``: bad input, one line)."""


@contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Raise ``TimeLimitExceeded(message)`` in the ``with`` body once ``seconds`` have passed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeLimitExceeded(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
