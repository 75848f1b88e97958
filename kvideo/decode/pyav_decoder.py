"""``pyav_cpu``: FFmpeg through PyAV, decoding only the frames the targets need.

Why a second CPU decoder beside decord:

* **Less work.** decord decodes every frame from the keyframe before a target up to it.
  Most of those are non-reference B-frames that no later frame depends on; FFmpeg can skip
  them (``skip_frame = NONREF``), decord cannot. Here every packet that is not a target is
  sent with ``NONREF`` and every target with ``DEFAULT``, so only targets and the
  reference frames they depend on are decoded.
* **The frames a player shows.** FFmpeg's demuxer honours MP4 edit lists: the pre-roll
  frames of a stream-copy cut (``ffmpeg -ss X -c copy``) carry a discard flag and the
  decoder drops them. decord lists them as if shown and, worse, returns the wrong pixels
  for them, so ``decord_cpu`` hands such files to this decoder.
* **Any width.** PyAV copies rows with their real stride, so native-size frames come out
  at every width (decord fails at some, see ``decord_widths``).

How: one demux pass keeps every packet of the video stream in memory (the file is read
once, as decord's index scan does too). The display timeline is built from the packets
that are shown (not discarded), sorted by presentation time. Targets are grouped by the
keyframe they decode from; each group is decoded forward from its keyframe, continuing
without a flush when decoding has already reached the next group's keyframe. Frames are matched
to targets by presentation timestamp, never by counting outputs, so reordering, skipped
frames and discarded pre-roll cannot shift them.

Frames are bit-identical to ``decord_cpu`` at native size (both run FFmpeg's swscale
YUV->RGB conversion). Resized frames use swscale's bicubic filter as decord's scaler does.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch

from kvideo.decode.errors import DecodeError
from kvideo.decode.frame_index import Segment, Timeline
from kvideo.decode.guarded import TAIL_GUARD, GuardedDecoder, short_error
from kvideo.decode.types import DecodedClip, SampleFn, VideoSource, open_target, source_name
from kvideo.resize import Resize


@dataclass(frozen=True)
class _Stream:
    """A video stream's packets in decode order, and its display timeline."""

    packets: list[Any]  # av.Packet, decode order, data in memory
    keyframes: list[int]  # positions in ``packets`` of keyframes, ascending
    shown: np.ndarray  # shown[i] = position in ``packets`` of the i-th displayed frame
    pts: np.ndarray  # pts[i] = presentation timestamp (stream time base) of displayed frame i
    timeline: Timeline


def demux(container: Any, path: str) -> _Stream:
    """Every packet of the video stream (decode order, in memory) and the display timeline of the
    ones shown: a demux pass, no decoding (``kvideo.decode.display_index`` reads it too)."""
    stream = container.streams.video[0]
    tb = float(stream.time_base) if stream.time_base else 0.0
    packets: list[Any] = []
    try:
        for packet in container.demux(stream):
            if packet.size:  # the demuxer's final empty packet only marks the end
                packets.append(packet)
    except av.error.FFmpegError:
        pass  # a truncated or damaged tail: keep the packets read so far
    if not packets:
        raise DecodeError("decode_error", path, "video stream has no frames")
    keyframes = [k for k, p in enumerate(packets) if p.is_keyframe]
    shown_pos: list[int] = []
    shown_pts: list[int] = []
    for k, p in enumerate(packets):
        ts = p.pts if p.pts is not None else p.dts
        if ts is None:
            raise DecodeError("decode_error", path, "packets carry no timestamps")
        if not p.is_discard:
            shown_pos.append(k)
            shown_pts.append(int(ts))
    if not shown_pos:
        raise DecodeError("decode_error", path, "every frame is outside the edit list")
    order = np.argsort(np.asarray(shown_pts, dtype=np.int64), kind="stable")
    shown = np.asarray(shown_pos, dtype=np.int64)[order]
    pts = np.asarray(shown_pts, dtype=np.int64)[order]
    durations = np.asarray([packets[k].duration or 0 for k in shown], dtype=np.float64)
    table = np.stack([pts * tb, (pts + durations) * tb], axis=1)
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    try:
        timeline = Timeline.from_table(table, fallback_fps=rate)
    except ValueError as e:
        raise DecodeError("decode_error", path, str(e)) from None
    return _Stream(packets=packets, keyframes=keyframes, shown=shown, pts=pts, timeline=timeline)


def _plan(s: _Stream, targets: np.ndarray) -> list[tuple[int, set[int]]]:
    """Runs of (first packet position, pts of the targets it yields), in decode order.

    A target decodes from the last keyframe at or before its packet whose own picture is
    not shown after the target (an open-GOP keyframe can follow frames it cannot decode)."""
    runs: dict[int, set[int]] = {}
    for i in targets.tolist():
        pos = int(s.shown[i])
        j = bisect.bisect_right(s.keyframes, pos) - 1
        while j > 0 and _shown_after(s, s.keyframes[j], int(s.pts[i])):
            j -= 1
        start = s.keyframes[j] if j >= 0 else 0
        runs.setdefault(start, set()).add(int(s.pts[i]))
    return sorted(runs.items())


def _covers(got: dict[int, np.ndarray], s: _Stream, idx: np.ndarray) -> bool:
    return all(int(s.pts[i]) in got for i in idx.tolist())


def _shown_after(s: _Stream, position: int, pts: int) -> bool:
    p = s.packets[position]
    ts = p.pts if p.pts is not None else p.dts
    return ts is not None and ts > pts


class PyAVDecoder(GuardedDecoder):
    """``VideoDecoder`` on PyAV. ``skip_nonref=False`` decodes every frame from the keyframe
    (what decord does), for measuring what skipping saves. Picklable."""

    def __init__(
        self, *, num_threads: int = 1, timeout_s: float | None = 30.0, skip_nonref: bool = True
    ) -> None:
        super().__init__(num_threads=num_threads, timeout_s=timeout_s)
        self.skip_nonref = bool(skip_nonref)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_threads={self.num_threads}, timeout_s={self.timeout_s}, "
            f"skip_nonref={self.skip_nonref})"
        )

    def _decode_now(
        self,
        source: VideoSource,
        sample: SampleFn,
        resize: Resize | None,
        start: float | None,
        end: float | None,
    ) -> DecodedClip:
        path = source_name(source)
        container = self._open(source)
        try:
            s = demux(container, path)
            try:
                segment = s.timeline.segment(start, end)
            except ValueError as e:
                raise DecodeError("decode_error", path, str(e)) from None
            meta = segment.meta()
            stamps = list(sample(meta))
            if not stamps:
                raise ValueError(f"sample({meta}) returned no timestamps")
            idx = segment.indices_at(stamps)
            ctx = container.streams.video[0].codec_context
            size = None if resize is None else resize.output_size(ctx.width, ctx.height)
            frames, idx = self._frames(container, s, path, size, idx, segment)
        finally:
            container.close()
        return DecodedClip(frames=frames, times=segment.times_of(idx), meta=meta)

    # -- steps ---------------------------------------------------------------------------

    def _open(self, source: VideoSource) -> Any:
        return open_video(source, self.num_threads)

    def _frames(
        self,
        container: Any,
        s: _Stream,
        path: str,
        size: tuple[int, int] | None,
        idx: np.ndarray,
        segment: Segment,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Frames at display indices ``idx``, and the indices actually returned.

        When a damaged tail keeps some targets from decoding, the targets are clamped to
        ``num_frames - 1 - TAIL_GUARD`` once (``decord_cpu``'s retry rule): frames past the
        damage are replaced by the last one before it and ``times`` say so."""
        got, detail = self._decode_targets(container, s, size, np.unique(idx))
        if not _covers(got, s, idx):
            if not got and not self._decode_targets(container, s, None, np.zeros(1, dtype=np.int64))[0]:
                # What decord checks when it opens a file: a stream whose first frame does
                # not decode is unreadable, whichever decoder meets it.
                raise DecodeError("unreadable", path, f"the first frame does not decode ({detail})")
            limit = s.timeline.num_frames - 1 - TAIL_GUARD
            if limit < segment.first:
                raise DecodeError("decode_error", path, detail or "frames missing from the stream")
            idx = np.minimum(idx, limit)
            retry = np.asarray([i for i in np.unique(idx).tolist() if int(s.pts[i]) not in got])
            more, retry_detail = self._decode_targets(container, s, size, retry)
            got.update(more)
            if not _covers(got, s, idx):
                raise DecodeError(
                    "decode_error",
                    path,
                    f"{detail or 'frames missing'}; retry without the last {TAIL_GUARD} frames: "
                    f"{retry_detail or 'frames missing'}",
                )
        frames = np.stack([got[int(s.pts[i])] for i in idx.tolist()])
        return torch.from_numpy(frames), idx

    def _decode_targets(
        self, container: Any, s: _Stream, size: tuple[int, int] | None, targets: np.ndarray
    ) -> tuple[dict[int, np.ndarray], str]:
        """RGB frames of ``targets`` keyed by pts, and the last decode error's text."""
        ctx = container.streams.video[0].codec_context
        want = {int(s.pts[i]) for i in targets.tolist()}
        got: dict[int, np.ndarray] = {}
        detail = ""
        ctx.flush_buffers()
        cursor = -1  # position of the next packet the decoder would take without a flush
        for first, run in _plan(s, targets):
            # Decoding has run on from an earlier keyframe through this run's keyframe: every
            # packet since was fed (targets in full), so going on decodes nothing twice.
            if cursor < 0 or first > cursor:
                ctx.flush_buffers()
                cursor = first
            while not run.issubset(got) and cursor < len(s.packets):
                packet = s.packets[cursor]
                cursor += 1
                ts = packet.pts if packet.pts is not None else packet.dts
                ctx.skip_frame = "NONREF" if self.skip_nonref and ts not in want else "DEFAULT"
                detail = self._feed(ctx, packet, want, got, size) or detail
            if not run.issubset(got):  # end of stream: drain the reorder buffer
                ctx.skip_frame = "DEFAULT"
                detail = self._feed(ctx, None, want, got, size) or detail
                cursor = -1
        ctx.skip_frame = "DEFAULT"
        return got, detail

    @staticmethod
    def _feed(
        ctx: Any, packet: Any, want: set[int], got: dict[int, np.ndarray], size: tuple[int, int] | None
    ) -> str:
        try:
            frames = ctx.decode(packet)
        except av.error.FFmpegError as e:  # a damaged packet: later keyframes may still decode
            return short_error(e)
        for frame in frames:
            if frame.pts in want and frame.pts not in got:
                got[frame.pts] = _rgb(frame, size)
        return ""


def open_video(source: VideoSource, num_threads: int = 1) -> Any:
    """``source`` opened with PyAV for its video stream (slice threads only: frame threading
    would apply ``skip_frame`` to the wrong packets), or the ``DecodeError`` a decoder reports
    (``unreadable``, ``no_video_stream``)."""
    path = source_name(source)
    try:
        container = av.open(open_target(source), metadata_errors="ignore")
    except Exception as e:  # av.error.InvalidDataError, OSError, UnicodeDecodeError...
        raise DecodeError("unreadable", path, short_error(e)) from None
    if not container.streams.video:
        container.close()
        raise DecodeError("no_video_stream", path, "container has no video stream")
    ctx = container.streams.video[0].codec_context
    if ctx is None:  # PyAV gives no codec context when FFmpeg has no decoder for the stream
        container.close()
        detail = "the video stream is there but cannot be opened as video (FFmpeg has no decoder for it)"
        raise DecodeError("unreadable", path, detail)
    ctx.thread_type = "SLICE"
    ctx.thread_count = max(1, num_threads)
    return container


def _rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """The frame as RGB at native size, or resized to ``size`` (height, width)."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    height, width = size
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()


def make_pyav_decoder(
    *, num_threads: int = 1, timeout_s: float | None = 30.0, skip_nonref: bool = True
) -> PyAVDecoder:
    return PyAVDecoder(num_threads=num_threads, timeout_s=timeout_s, skip_nonref=skip_nonref)
