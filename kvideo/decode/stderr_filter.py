"""Keep decord's own copy of an open error off the terminal.

For a file it cannot open, decord's C++ prints ``[18:30:11] /project/src/video/video_reader.cc:86:
ERROR opening: x.mp4, Invalid data found when processing input`` (and FFmpeg's ``[mov,mp4,... @
0x...] moov atom not found``) straight to file descriptor 2, then raises the same error, which
kvideo counts as an ``unreadable`` skip and reports in its own line. The raw lines say ERROR for
a skip and hide the messages that matter. decord has no switch for them (``decord.logging`` sets
FFmpeg's level only, and not for its own log), so the open runs with descriptor 2 pointed at a
temporary file, and what landed there is written back to stderr, less those lines.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# decord's dmlc log line for a failed open, and FFmpeg's lines (``[demuxer @ 0xADDR] ...``).
DECORD_OPEN_NOISE = re.compile(rb"video_reader\.cc:\d+: ERROR opening: |^\[[\w,]+ @ 0x[0-9a-f]+\] ")

# Descriptor 2 is process-wide: one capture at a time. A second thread's open, or one after a
# hung open that a deadline abandoned, runs uncaptured rather than waiting.
_BUSY = threading.Lock()
_SWAP = threading.Lock()
_saved: int | None = None  # the real stderr's duplicate while a capture is in flight


@contextmanager
def stderr_without(drop: re.Pattern[bytes]) -> Iterator[None]:
    """Run the body with descriptor 2 captured; afterwards write every captured line that
    ``drop`` does not match back to stderr (another thread's lines are delayed, never lost)."""
    if not _BUSY.acquire(blocking=False):
        yield
        return
    global _saved
    try:
        with tempfile.TemporaryFile() as sink:
            sys.stderr.flush()
            with _SWAP:
                _saved = os.dup(2)
                os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                restore_stderr()
                sink.seek(0)
                kept = [line for line in sink.read().splitlines(keepends=True) if not drop.search(line)]
                if kept:
                    os.write(2, b"".join(kept))
    finally:
        _BUSY.release()


def restore_stderr() -> None:
    """Point descriptor 2 back at the real stderr if a capture holds it: at the capture's end,
    and when a deadline abandons a decode hung inside one (its lines are then lost, the
    process's later messages are not)."""
    global _saved
    with _SWAP:
        if _saved is not None:
            os.dup2(_saved, 2)
            os.close(_saved)
            _saved = None
