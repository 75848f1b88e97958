"""Why a sample could not be decoded.

A bad video must never crash a training run: decoders raise ``DecodeError`` with one
of these reasons, the dataset turns it into a masked (or replaced) sample, and the
trainer counts it per reason in ``metrics.jsonl`` and lists the file in ``skipped.jsonl``.
"""

from __future__ import annotations

SKIP_REASONS = (
    "missing",  # path does not exist (or a shard sample without a video member)
    "not_a_file",  # a directory (or other non-regular file) where a video should be
    "permission",  # cannot be opened for reading
    "empty",  # zero bytes
    "unreadable",  # not a container decord/FFmpeg can open (text file, missing moov, ...)
    "no_video_stream",  # a container with no video stream (audio only)
    "decode_error",  # opened but frames could not be decoded (truncated mdat, corrupt data)
    "timeout",  # decode exceeded decoder.timeout_s (decord hangs on some files)
    "blocklisted",  # listed in data.blocklist by ``kvideo.validate``
    "worker_crash",  # its decode killed a DataLoader worker twice (a segfault, the OOM killer)
    "no_caption",  # a shard sample without a caption (no .txt member, or an empty one)
    "duplicate_member",  # a shard sample with two members of one name: which one is meant?
    "shard_changed",  # its tar shard was rewritten after it was listed: the offsets are stale
)


class DecodeError(Exception):
    """A sample that cannot be used, with a reason from ``SKIP_REASONS``."""

    def __init__(self, reason: str, path: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        self.reason = reason
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))
