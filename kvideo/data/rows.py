"""``ClipRow``: the one record that crosses the dataset-builder -> per-sample boundary.

Builders only list clips (no decoding, no stat of each file): a 10M-row WebVid
manifest must turn into rows quickly, and a missing file is the decoder's business
(it is counted as a ``missing`` skip, not a crash).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipRow:
    """One training example before decoding.

    path: Absolute path of the video file (it may not exist; the decoder reports that).
    caption: Target text.
    start / end: Optional segment of the file in seconds (``None`` = file start / end).
    clip_id: Stable identifier for logs and evaluation (WebVid ``videoid``, manifest ``id``).
    """

    path: str
    caption: str
    start: float | None = None
    end: float | None = None
    clip_id: str = ""
