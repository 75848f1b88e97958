"""``ClipRow``: the one record that crosses the dataset-builder -> per-sample boundary.

Builders only list clips (no decoding, no stat of each file): a 10M-row WebVid
manifest must turn into rows quickly, and a missing file is the decoder's business
(it is counted as a ``missing`` skip, not a crash).

``video_source`` is what a decoder then opens for a row, in one place for training
(``kvideo.data.clip_dataset``) and ``kvideo.validate`` (``kvideo.tools.probe``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from kvideo.data.remote import is_url, read_range
from kvideo.decode.errors import DecodeError
from kvideo.decode.types import VideoBytes, VideoSource

# What tells a shard's version apart: (size, mtime_ns, inode) of a local file, (size, ETag) of
# an object in storage (``kvideo.data.datasets.shard_locations``).
Stamp = tuple[int | str, ...]

# The roles a conversation turn may have (Hugging Face chat-template names).
TURN_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: ``role`` in ``TURN_ROLES``, ``text`` as written (a user
    turn may hold the ``<video>`` placeholder, see ``kvideo.data.conversation``)."""

    role: str
    text: str


@dataclass(frozen=True)
class ClipRow:
    """One training example before decoding.

    path: Absolute path of the video file (it may not exist; the decoder reports that). For a
        sample inside a tar shard: ``<shard path>#<member name>`` (``<shard path>#<key>`` when
        the sample has no video member), the name logs, ``skipped.jsonl`` and the blocklist use.
    caption: Target text; for a conversation, its last assistant answer (the reference that
        generated answers are compared with).
    start / end: Optional segment of the file in seconds (``None`` = file start / end).
    clip_id: Stable identifier for logs and evaluation (WebVid ``videoid``, manifest ``id``,
        a shard sample's key).
    turns: The whole conversation for a conversation dataset (loss on every assistant turn);
        empty for a caption dataset, whose text is ``video.prompt`` then ``caption``.
    shard: The tar file holding the sample (a path, or a URL in object storage), or ``""`` for a
        video file of its own. The rows
        of one shard are consecutive, in the shard's order: the loader streams them shard by
        shard (``kvideo.data.sharding.ShardLayout``).
    shard_stamp: ``Stamp`` of ``shard`` when it was listed: a local shard rewritten
        since then has other bytes at ``offset`` (measured: every sample decoded its neighbour's
        video under the old caption), so its samples are skipped as ``shard_changed``.
    offset / size: Where the video's bytes lie in ``shard``.
    skip_reason: A ``SKIP_REASONS`` entry already known when listing (a shard sample without
        its caption or its video): the sample is counted under it and never decoded.
    more_visuals: The record's further videos or pictures (absolute paths, whole files), bound in
        order to its later placeholders (``kvideo.data.conversation``); ``path`` is its first.
    """

    path: str
    caption: str
    start: float | None = None
    end: float | None = None
    clip_id: str = ""
    turns: tuple[Turn, ...] = ()
    shard: str = ""
    shard_stamp: Stamp = ()
    offset: int = 0
    size: int = 0
    skip_reason: str = ""
    more_visuals: tuple[str, ...] = ()

    @property
    def visuals(self) -> int:
        """How many clips or pictures the record holds."""
        return 1 + len(self.more_visuals)


def video_source(row: ClipRow, *, retry_s: float = 20.0) -> VideoSource:
    """What a decoder opens for ``row``: its path, or for a shard sample its video's bytes,
    read by offset (nothing is written to disk); from object storage, by one ranged request
    retried for ``retry_s`` (``kvideo.data.remote.read_range``).

    Raises ``DecodeError`` with the row's own ``skip_reason``, or for a shard that can no
    longer be read: ``missing`` (the shard is gone), ``permission``, ``shard_changed`` (rewritten
    since it was listed), ``decode_error`` (the shard now ends inside the member: cut after it
    was listed) or ``unreadable`` (other I/O errors).
    """
    if row.skip_reason:
        raise DecodeError(row.skip_reason, row.path)
    if not row.shard:
        return row.path
    if is_url(row.shard):
        data = read_range(row.shard, row.offset, row.size, retry_s=retry_s, name=row.path)
        if len(data) < row.size:
            detail = f"shard {row.shard} ends {row.size - len(data)} bytes into the member"
            raise DecodeError("decode_error", row.path, detail)
        return VideoBytes(row.path, data)
    try:
        with open(row.shard, "rb") as shard:
            st = os.fstat(shard.fileno())
            if row.shard_stamp and row.shard_stamp != (st.st_size, st.st_mtime_ns, st.st_ino):
                detail = f"shard {row.shard} was rewritten after it was listed (size, mtime or inode)"
                raise DecodeError("shard_changed", row.path, detail)
            shard.seek(row.offset)
            data = shard.read(row.size)
    except (FileNotFoundError, NotADirectoryError):
        raise DecodeError("missing", row.path, f"shard {row.shard} is gone") from None
    except PermissionError as e:
        raise DecodeError("permission", row.path, e.strerror or "shard not readable") from None
    except OSError as e:
        raise DecodeError("unreadable", row.path, f"reading shard {row.shard}: {e.strerror or e}") from None
    if len(data) < row.size:
        detail = f"shard {row.shard} ends {row.size - len(data)} bytes into the member"
        raise DecodeError("decode_error", row.path, detail)
    return VideoBytes(row.path, data)


class ListedRows(list[ClipRow]):
    """A builder's rows plus what its listing left out, ``left_out`` {reason: rows}: known before
    training (a WebVid row whose video was never downloaded), so each is counted once, in the
    run's ``final.json``, rather than as a skip at every visit."""

    def __init__(self, rows: Iterable[ClipRow] = (), left_out: dict[str, int] | None = None) -> None:
        super().__init__(rows)
        self.left_out = dict(left_out or {})
