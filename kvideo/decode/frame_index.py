"""Timestamp -> frame index mapping over a container's real per-frame timestamps.

Pure numpy so the rules (VFR gaps, stream start offsets, past-the-end and negative
stamps, trimming, a bogus frame table) are unit-testable without a video file.

Rules (the contract in docs/architecture.md):

* Time zero is the first frame's display start. decord2 3.4 already reports times with
  the stream's start offset removed (MP4 edit lists, MKV/WebM and MPEG-TS offsets alike);
  we subtract ``starts[0]`` anyway so a build that keeps the offset gives the same answer.
* A stamp ``t`` selects the frame being displayed at ``t``: the last frame whose start
  <= t. Stamps before 0 select the first frame, stamps past the end the last frame.
* duration = last frame's start + last frame's display duration. The last frame's display
  duration is ``end - start`` from the container when that is positive, otherwise a guess:
  the median gap between frame starts, otherwise ``1 / fallback_fps`` (decord's average fps),
  either capped at 1 s (``_last_duration`` says why), otherwise 0 (a single frame with no
  timing information).
* native_fps = (frames starting inside the window) / duration: for the whole video that is
  num_frames / duration, the true mean rate for VFR, where a container's nominal rate can be
  far off (decord's ``get_avg_fps`` reports 25 for a 16.5 fps VFR MKV).
* Trim window [start, end): its frames are the one on screen at ``start`` through the last
  one starting before ``end``; stamps are relative to ``start``.
* Sanity clamp: only the longest prefix of frames whose starts are finite and
  non-decreasing is kept; frames after the first NaN/inf or backwards jump are dropped
  (a damaged index would otherwise send a seek past the data that really exists).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvideo.decode.types import ClipMeta

# decord keeps frame times as float32, so 0.2 s is stored as 0.200000003 and 3600.04 s as
# 3600.0400390625: a stamp exactly on a frame boundary must still select that frame. Slack:
# 1 us plus two ulps of the table's dtype at its largest absolute time (stream offset included),
# e.g. 0.9 ms for float32 an hour in: far below any real frame interval.
_ABS_TOL = 1e-6


def _slack(raw_starts: np.ndarray, dtype: np.dtype) -> float:
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)
    return _ABS_TOL + 2.0 * eps * float(np.max(np.abs(raw_starts)))


def valid_prefix(starts: np.ndarray) -> int:
    """Length of the longest prefix of ``starts`` that is finite and non-decreasing."""
    starts = np.asarray(starts, dtype=np.float64)
    bad = ~np.isfinite(starts)
    bad[1:] |= np.diff(starts) < 0
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else int(starts.size)


def _last_duration(
    starts: np.ndarray, ends: np.ndarray | None, fallback_fps: float, max_guess: float = 1.0
) -> float:
    """How long the last frame is shown: what a player shows.

    The container's own ``end - start`` when it gives one (MP4's last ``stts`` delta, a
    packet duration): a player holds the last frame exactly that long. Otherwise (MPEG-TS,
    a muxer that wrote 0) the hold must be guessed. The median gap is the frame interval of
    dense video, CFR or VFR, so N frames at 25 fps still last N / 25 s. But for a sparse clip
    (a paused camera, a slideshow: frames at 0, 1800 and 3600 s) the gap is not a frame
    interval, and appending it stretched that clip by half, to 5400 s, while a player stops
    right after the last frame. Neither the gaps nor the average fps (frames / a duration
    that is itself this long; decord reports 1/1200 fps there) can tell such a clip from a
    genuinely slow one, so the guess is capped at ``max_guess`` (1 s): exact for every rate
    of 1 fps and up, at most 1 s off below that. Too short is the harmless side: every frame
    still starts inside ``[0, duration)`` and can be sampled, whereas too long spends that
    share of evenly spaced stamps on the last frame and under-reports ``native_fps``.
    """
    if ends is not None and ends.size:
        d = float(ends[-1] - starts[-1])
        if np.isfinite(d) and d > 0:
            return d
    gaps = np.diff(starts)
    gaps = gaps[gaps > 0]
    if gaps.size:
        return min(float(np.median(gaps)), max_guess)
    if fallback_fps and np.isfinite(fallback_fps) and fallback_fps > 0:
        return min(1.0 / float(fallback_fps), max_guess)
    return 0.0


@dataclass(frozen=True)
class Timeline:
    """Frame start times of a whole video (seconds, ``starts[0] == 0``, non-decreasing)."""

    starts: np.ndarray
    last_duration: float
    slack: float = _ABS_TOL  # how far a stamp may fall short of a frame start and still select it

    @classmethod
    def from_table(
        cls,
        table: np.ndarray,
        *,
        reported_frames: int | None = None,
        fallback_fps: float = 0.0,
    ) -> Timeline:
        """Build from decord's ``get_frame_timestamp`` table: shape (N, 2) of (start, end)
        seconds per frame, or (N,) starts only. ``reported_frames`` (``len(vr)``) caps N;
        the sanity clamp then keeps the valid prefix. Raises ``ValueError`` when no frame
        has a usable timestamp."""
        table = np.asarray(table)
        dtype = table.dtype
        table = table.astype(np.float64, copy=False)
        if table.ndim == 1:
            table = table[:, None]
        if table.ndim != 2 or table.shape[1] < 1:
            raise ValueError(f"frame table must be (N, 2) or (N,), got shape {table.shape}")
        n = table.shape[0] if reported_frames is None else max(0, min(reported_frames, table.shape[0]))
        starts = table[:n, 0]
        n = valid_prefix(starts)
        if n == 0:
            raise ValueError("no frame has a valid timestamp")
        starts = starts[:n]
        ends = table[:n, 1] if table.shape[1] > 1 else None
        last = _last_duration(starts, ends, fallback_fps)
        # Round to 1 us: decord's float32 times turn 0.2 s into 0.200000003 s.
        return cls(
            starts=np.round(starts - starts[0], 6),
            last_duration=round(last, 6),
            slack=_slack(starts, dtype),
        )

    @property
    def num_frames(self) -> int:
        return int(self.starts.size)

    @property
    def duration(self) -> float:
        return round(float(self.starts[-1]) + self.last_duration, 6)

    def indices_at(self, times: np.ndarray | list[float]) -> np.ndarray:
        """Index of the frame displayed at each time (seconds from the first frame)."""
        t = np.asarray(times, dtype=np.float64)
        idx = np.searchsorted(self.starts, t + self.slack, side="right") - 1
        return np.clip(idx, 0, self.num_frames - 1).astype(np.int64)

    def segment(self, start: float | None = None, end: float | None = None) -> Segment:
        """The part of the video between ``start`` and ``end`` seconds (None = the video's
        own start/end; ``start < 0`` is treated as 0 and ``end`` past the end as the end).

        Raises ``ValueError`` for a window that holds no video (start at/after the end,
        ``end <= start``, non-finite bounds)."""
        total = self.duration
        s = 0.0 if start is None else max(0.0, float(start))
        e = total if end is None else min(total, float(end))
        if not (np.isfinite(s) and np.isfinite(e)):
            raise ValueError(f"trim window [{start}, {end}] is not finite")
        if s > 0 and s >= total - self.slack:
            raise ValueError(f"trim start {s:g} s is at or after the video's end ({total:g} s)")
        if end is not None and e <= s:
            raise ValueError(f"trim window [{s:g}, {float(end):g}] s is empty (video is {total:g} s)")
        first = int(self.indices_at([s])[0])
        # Last frame that starts strictly before the segment's end.
        last = int(np.searchsorted(self.starts, e - self.slack, side="left")) - 1
        last = min(max(first, last), self.num_frames - 1)
        return Segment(timeline=self, offset=s, duration=round(e - s, 6), first=first, last=last)


@dataclass(frozen=True)
class Segment:
    """A window of a ``Timeline``: frames ``first..last`` (inclusive), times relative to
    ``offset`` seconds."""

    timeline: Timeline
    offset: float
    duration: float
    first: int
    last: int

    @property
    def num_frames(self) -> int:
        return self.last - self.first + 1

    def meta(self) -> ClipMeta:
        """``native_fps`` counts frames that *start* inside the window, so a trim that begins
        mid-frame (adding the frame already on screen to ``num_frames``) still reports 25 fps
        for a 25 fps video. ``frame_starts`` are ``frame_starts()``: a sampler that picks frame
        indices can name them as times that ``indices_at`` maps back to those very frames."""
        starts, slack = self.timeline.starts, self.timeline.slack
        lo = np.searchsorted(starts, self.offset - slack, side="left")
        hi = np.searchsorted(starts, self.offset + self.duration - slack, side="left")
        inside = int(hi - lo) or self.num_frames
        fps = inside / self.duration if self.duration > 0 else 0.0
        return ClipMeta(
            duration=float(self.duration),
            native_fps=float(fps),
            num_frames=self.num_frames,
            frame_starts=self.frame_starts(),
        )

    def frame_starts(self) -> np.ndarray:
        """Start of each of the segment's frames relative to its start (read-only float64).

        The frame already on screen when the segment starts gets 0, as in ``times_of``; every
        value ``s`` satisfies ``indices_at([s]) == [that frame]`` (unless two frames share a
        start, when the later one is the one displayed)."""
        starts = np.maximum(self.timeline.starts[self.first : self.last + 1] - self.offset, 0.0)
        starts.flags.writeable = False
        return starts

    def indices_at(self, stamps: np.ndarray | list[float]) -> np.ndarray:
        """Frame index (into the whole video) displayed at each stamp (seconds relative to
        the segment start), clamped to the segment's frames."""
        t = np.asarray(stamps, dtype=np.float64)
        if t.ndim != 1:
            raise ValueError(f"timestamps must be a flat list, got shape {t.shape}")
        if not np.isfinite(t).all():
            raise ValueError(f"timestamps must be finite, got {t.tolist()}")
        idx = self.timeline.indices_at(self.offset + t)
        clipped: np.ndarray = np.clip(idx, self.first, self.last)  # Any: idx has no dtype parameter
        return clipped

    def times_of(self, indices: np.ndarray | list[int]) -> list[float]:
        """Display time of each frame relative to the segment start. The frame already on
        screen when the segment starts is shown from the segment's start, so it gets 0
        rather than a negative time. Rounded to 1 us (decord's times are float32)."""
        starts = self.timeline.starts[np.asarray(indices, dtype=np.int64)] - self.offset
        return [round(max(0.0, float(x)), 6) for x in starts]
