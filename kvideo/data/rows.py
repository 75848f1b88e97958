"""``ClipRow``: the one record that crosses the dataset-builder -> per-sample boundary.

Builders only list clips (no decoding, no stat of each file): a 10M-row WebVid
manifest must turn into rows quickly, and a missing file is the decoder's business
(it is counted as a ``missing`` skip, not a crash).
"""

from __future__ import annotations

from dataclasses import dataclass

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

    path: Absolute path of the video file (it may not exist; the decoder reports that).
    caption: Target text; for a conversation, its last assistant answer (the reference that
        generated answers are compared with).
    start / end: Optional segment of the file in seconds (``None`` = file start / end).
    clip_id: Stable identifier for logs and evaluation (WebVid ``videoid``, manifest ``id``).
    turns: The whole conversation for a conversation dataset (loss on every assistant turn);
        empty for a caption dataset, whose text is ``video.prompt`` then ``caption``.
    """

    path: str
    caption: str
    start: float | None = None
    end: float | None = None
    clip_id: str = ""
    turns: tuple[Turn, ...] = ()
