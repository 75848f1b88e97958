"""What every CPU decoder does around its own decoding: file pre-checks, the per-sample
deadline and clean errors.

A decoder subclasses ``GuardedDecoder`` and implements ``_decode_now``; ``decode`` (the
``VideoDecoder`` contract) is written once here, so ``decord_cpu`` and ``pyav_cpu`` report
the same reasons, obey the same ``decoder.timeout_s`` and never leak a reader through a
traceback.
"""

from __future__ import annotations

import re

from kvideo.decode.checks import check_video_source
from kvideo.decode.deadline import DeadlineExceeded, DeadlineRunner
from kvideo.decode.errors import DecodeError
from kvideo.decode.stderr_filter import restore_stderr
from kvideo.decode.types import DecodedClip, SampleFn, VideoBytes, VideoSource, source_name
from kvideo.errors import one_line
from kvideo.resize import Resize, as_resize

# A truncated file's last packet is cut mid-way; the demuxer counts it as a frame and the
# decoder fails when it reaches it. With B-frames the damaged packet can be shown up to
# 3 frames before the end (measured: libx264 bf=2, faststart MP4 cut at 40/60/80 %). The
# retry drops this many frames from the end of the table.
TAIL_GUARD = 4

_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def short_error(e: BaseException) -> str:
    """One line of a decoder/FFmpeg error, without decord's '[hh:mm:ss] file.cc:NN:' prefixes."""
    return one_line(_LOG_PREFIX.sub("", str(e)), limit=200) or type(e).__name__


class GuardedDecoder:
    """Base of the CPU decoders: ``decode`` = pre-checks + deadline + ``_decode_now``."""

    def __init__(self, *, num_threads: int = 1, timeout_s: float | None = 30.0) -> None:
        self.num_threads = int(num_threads)
        self.timeout_s = timeout_s
        self._runner = DeadlineRunner()

    def decode(
        self,
        source: VideoSource,
        sample: SampleFn,
        *,
        size: int | Resize | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> DecodedClip:
        """Decode the frames displayed at ``sample(meta)`` seconds (relative to ``start``) of
        ``source``: a path, or a file's bytes (``VideoBytes``), read the same way.

        ``size``: None = native size, an int = that square, a ``Resize`` = its rule applied to
        the source's size (``video.resize``, ``kvideo.resize``).

        Raises ``DecodeError`` (reason in ``SKIP_REASONS``) for files that cannot be used;
        exceptions from ``sample`` itself and ``ValueError`` for bad arguments propagate.
        """
        if not isinstance(source, VideoBytes):
            source = str(source)  # a pathlib.Path too, as callers have always been able to pass
        resize = as_resize(size)
        if resize is not None and resize.frame_size <= 0:
            raise ValueError(f"size must be positive or None, got {size}")
        check_video_source(source)
        try:
            if not self.timeout_s or self.timeout_s <= 0:
                return self._decode_now(source, sample, resize, start, end)
            return self._runner.run(
                lambda: self._decode_now(source, sample, resize, start, end), self.timeout_s
            )
        except DecodeError as e:
            failure = DecodeError(e.reason, e.path, e.detail)
        except DeadlineExceeded as e:
            restore_stderr()  # the abandoned call may hang inside decord's open
            failure = DecodeError("timeout", source_name(source), str(e))
        # Raised outside the except blocks: a fresh exception with no traceback or context,
        # so nothing keeps the failed reader (a local of the frames above) alive while the
        # caller holds on to the error, e.g. to log it to skipped.jsonl.
        raise failure

    def _decode_now(
        self,
        source: VideoSource,
        sample: SampleFn,
        resize: Resize | None,
        start: float | None,
        end: float | None,
    ) -> DecodedClip:
        raise NotImplementedError
