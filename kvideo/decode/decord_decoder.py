"""decord-backed decoders: ``decord_cpu`` and ``decord_gpu``.

Why decord: ``get_batch(indices)`` seeks to the keyframe before each target and decodes
forward, instead of decoding a whole clip sequentially. Guards against its known pains
(docs/architecture.md, Decoding):

* leaks with long-lived readers -> a fresh ``VideoReader`` per ``decode`` call, dropped
  before returning (and never kept alive by a raised exception's traceback);
* hangs -> every decode runs under ``DecoderConfig.timeout_s`` (``deadline.py``);
* frame tables that promise more than the file holds -> timestamp sanity clamp
  (``frame_index.Timeline``); on the GPU one tail-dropping retry (``TAIL_GUARD``), on the CPU
  the clip goes to PyAV (below).

Two kinds of clip decord gets wrong are handed to ``pyav_cpu`` (``pyav_decoder.py``),
which returns the frames a player shows, at every width:

* MP4 edit lists with pre-roll (stream-copy cuts, ``ffmpeg -ss X -c copy``): decord lists
  the discarded pre-roll frames at negative times and returns shifted pixels for the first
  GOP. Recognised by a first frame time below zero (decord removes the stream's start
  offset, so an ordinary file starts at 0).
* output widths decord cannot copy out on some CPU (``decord_widths``): a requested size
  that fails on any CPU goes to PyAV directly, so every node of a cluster resamples the
  same way; a native width that fails on this CPU is noticed by decord's own error;
* streams decord fails to decode (a truncated or damaged file): whether decord's read-ahead
  thread reaches the damage first is a race, PyAV's salvage of the frames before it is not.

Frames reach torch through DLPack (zero-copy, ~0.1 ms) rather than ``asnumpy()``
(a full copy, ~1.9 ms for 17 frames of 596x336); ``decord.bridge.set_bridge`` is
avoided because it is process-global state.
"""

from __future__ import annotations

from typing import Any

import decord
import numpy as np
import torch
from torch.utils.dlpack import from_dlpack

from kvideo.decode.decord_widths import decord_can_emit_width
from kvideo.decode.errors import DecodeError
from kvideo.decode.frame_index import Segment, Timeline
from kvideo.decode.guarded import TAIL_GUARD, GuardedDecoder, short_error
from kvideo.decode.pyav_decoder import PyAVDecoder
from kvideo.decode.stderr_filter import DECORD_OPEN_NOISE, stderr_without
from kvideo.decode.types import DecodedClip, SampleFn, VideoSource, open_target, source_name
from kvideo.resize import Resize

# decord's error when it cannot copy out a frame width (see decord_widths).
_WIDTH_BUG = "DECORDArrayCopyFromTo"


class _HandOver(Exception):
    """This clip is one decord decodes wrongly: decode it with PyAV instead."""


def _has_video_stream(source: VideoSource) -> bool | None:
    """PyAV probe, used only on the error path to tell 'audio-only' from 'garbage'.
    None when PyAV cannot open the file either. Opened as ``pyav_cpu`` opens it (metadata
    errors ignored), so both decoders judge the same streams: a damaged metadata tag must not
    make this probe fail on a file that ``pyav_cpu`` opens."""
    try:
        import av

        with av.open(open_target(source), metadata_errors="ignore") as container:
            return len(container.streams.video) > 0
    except Exception:
        return None


class DecordDecoder(GuardedDecoder):
    """``VideoDecoder`` on decord, on ``device`` ``("cpu", 0)`` or ``("gpu", i)``; frames
    come back on the matching torch device. Picklable (DataLoader workers started by spawn
    receive a copy)."""

    def __init__(
        self, device: tuple[str, int] = ("cpu", 0), *, num_threads: int = 1, timeout_s: float | None = 30.0
    ) -> None:
        kind, index = device
        if kind not in ("cpu", "gpu"):
            raise ValueError(f"device must be ('cpu', i) or ('gpu', i), got {device!r}")
        super().__init__(num_threads=num_threads, timeout_s=timeout_s)
        self.device = (kind, int(index))
        self.ctx: Any = decord.cpu(self.device[1]) if kind == "cpu" else decord.gpu(self.device[1])
        # Same threads, no deadline of its own: it runs inside this decoder's.
        self._pyav = PyAVDecoder(num_threads=num_threads, timeout_s=None)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(device={self.device}, num_threads={self.num_threads}, "
            f"timeout_s={self.timeout_s})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["ctx"]  # decord contexts do not pickle; rebuilt from self.device
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        kind, index = self.device
        self.ctx = decord.cpu(index) if kind == "cpu" else decord.gpu(index)

    def _decode_now(
        self,
        source: VideoSource,
        sample: SampleFn,
        resize: Resize | None,
        start: float | None,
        end: float | None,
    ) -> DecodedClip:
        size = self._output_size(source, resize)
        if self.device[0] == "cpu":
            if size is not None and not decord_can_emit_width(size[1]):
                return self._pyav._decode_now(source, sample, resize, start, end)
            try:
                return self._decode_with_decord(source, sample, size, start, end)
            except _HandOver:
                return self._pyav._decode_now(source, sample, resize, start, end)
        return self._decode_with_decord(source, sample, size, start, end)

    # -- steps ---------------------------------------------------------------------------

    @staticmethod
    def _output_size(source: VideoSource, resize: Resize | None) -> tuple[int, int] | None:
        """``(height, width)`` to open decord at: a square needs no look at the file; the other
        rules need the source's size before decord opens it, read from the stream header by
        PyAV (the size PyAV's decoder scales from too, so a hand-over gives the same frames)."""
        if resize is None or resize.mode == "square":
            return None if resize is None else (resize.frame_size, resize.frame_size)
        try:
            import av

            with av.open(open_target(source), metadata_errors="ignore") as container:
                ctx = container.streams.video[0].codec_context
                width, height = int(ctx.width), int(ctx.height)
        except Exception as e:  # no video stream, unreadable header: decord would fail too
            raise DecodeError(
                "unreadable", source_name(source), f"cannot read the frame size: {short_error(e)}"
            ) from None
        if width <= 0 or height <= 0:
            raise DecodeError(
                "unreadable", source_name(source), f"the stream reports a {width}x{height} frame"
            )
        return resize.output_size(width, height)

    def _decode_with_decord(
        self,
        source: VideoSource,
        sample: SampleFn,
        size: tuple[int, int] | None,
        start: float | None,
        end: float | None,
    ) -> DecodedClip:
        path = source_name(source)
        vr = self._open(source, size)
        try:
            timeline = self._timeline(vr, path)
            try:
                segment = timeline.segment(start, end)
            except ValueError as e:
                raise DecodeError("decode_error", path, str(e)) from None
            meta = segment.meta()
            stamps = list(sample(meta))
            if not stamps:
                raise ValueError(f"sample({meta}) returned no timestamps")
            idx = segment.indices_at(stamps)
            frames, idx = self._frames(vr, source, size, idx, segment)
        finally:
            del vr
        return DecodedClip(frames=frames, times=segment.times_of(idx), meta=meta)

    def _open(self, source: VideoSource, size: tuple[int, int] | None) -> decord.VideoReader:
        height, width = (-1, -1) if size is None else size
        try:
            # A file object is read into decord's own buffer (its in-memory reader): no temp file.
            # decord prints its own copy of an open error; kvideo reports it (stderr_filter).
            with stderr_without(DECORD_OPEN_NOISE):
                return decord.VideoReader(
                    open_target(source),
                    ctx=self.ctx,
                    width=width,
                    height=height,
                    num_threads=self.num_threads,
                )
        except Exception as e:  # DECORDError, RuntimeError("Error reading ..."), AssertionError
            detail = short_error(e)
        raise self._open_error(source, detail)

    @staticmethod
    def _open_error(source: VideoSource, detail: str) -> DecodeError:
        """The reason for a file decord cannot open.

        decord says "cannot find video stream" both when the container has none (audio only)
        and when FFmpeg finds no decoder for the one it has (a damaged sample entry; measured:
        of 20 H.264 MP4s with 30 random bytes changed, 5 got that message and 4 of those had a
        video stream). So PyAV's stream list decides, as in ``pyav_cpu``: ``no_video_stream``
        only for a container without a video stream, ``unreadable`` for one that has it."""
        path = source_name(source)
        if "Invalid frame count" in detail:
            return DecodeError("decode_error", path, "video stream has no frames")
        has_video = _has_video_stream(source)
        if has_video is False:
            return DecodeError("no_video_stream", path, "container has no video stream")
        if has_video and "cannot find video stream" in detail:
            return DecodeError(
                "unreadable", path, f"the video stream is there but cannot be opened as video ({detail})"
            )
        return DecodeError("unreadable", path, detail)

    def _timeline(self, vr: decord.VideoReader, path: str) -> Timeline:
        n = len(vr)
        try:
            table = vr.get_frame_timestamp(range(n))
        except IndexError:
            # len(vr) claims more frames than the timestamp table holds: decord has cached
            # the whole table before indexing it; the sanity clamp takes it from there.
            table = getattr(vr, "_frame_pts", None)
        except Exception as e:
            raise DecodeError("decode_error", path, f"frame timestamps: {short_error(e)}") from None
        if table is None:
            raise DecodeError("decode_error", path, "no frame timestamps")
        table = np.asarray(table)
        if self.device[0] == "cpu" and table.size and float(table.reshape(len(table), -1)[0, 0]) < -1e-6:
            raise _HandOver  # edit-list pre-roll: frames before time 0 are never shown
        try:
            return Timeline.from_table(table, reported_frames=n, fallback_fps=float(vr.get_avg_fps()))
        except ValueError as e:
            raise DecodeError("decode_error", path, str(e)) from None

    def _frames(
        self,
        vr: decord.VideoReader,
        source: VideoSource,
        size: tuple[int, int] | None,
        idx: np.ndarray,
        segment: Segment,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """One ``get_batch`` over the de-duplicated, sorted indices, re-expanded to ``idx``.

        On failure the CPU decoder hands the clip to PyAV; on the GPU, retry once on a fresh
        reader with every index clamped to ``num_frames - 1 - TAIL_GUARD``: frames past a
        damaged tail are replaced by the last frame before it (``times`` then report that
        frame's real time). Returns the frames and the indices actually decoded."""
        batch, detail = self._get_batch(vr, idx)
        if batch is None and self.device[0] == "cpu":
            # A native width this CPU's decord cannot copy out, or a damaged stream: decord's
            # read-ahead thread makes the outcome of a damaged tail a race (measured: the same
            # truncated file decodes or fails run to run); PyAV salvages it the same way every time.
            raise _HandOver
        if batch is None:
            path = source_name(source)
            limit = segment.timeline.num_frames - 1 - TAIL_GUARD
            if limit < segment.first:
                raise DecodeError("decode_error", path, detail)
            idx = np.minimum(idx, limit)
            batch, retry_detail = self._get_batch_fresh(source, size, idx)
            if batch is None:
                raise DecodeError(
                    "decode_error",
                    path,
                    f"{detail}; retry without the last {TAIL_GUARD} frames: {retry_detail}",
                )
        return batch, idx

    def _get_batch_fresh(
        self, source: VideoSource, size: tuple[int, int] | None, idx: np.ndarray
    ) -> tuple[torch.Tensor | None, str]:
        vr = self._open(source, size)
        try:
            return self._get_batch(vr, idx)
        finally:
            del vr

    @staticmethod
    def _get_batch(vr: decord.VideoReader, idx: np.ndarray) -> tuple[torch.Tensor | None, str]:
        """(frames, "") or (None, error text). Never raises a decord error, so no
        traceback keeps the reader alive."""
        uniq, inverse = np.unique(idx, return_inverse=True)
        try:
            nd = vr.get_batch(uniq)
        except Exception as e:
            return None, short_error(e)
        frames = from_dlpack(nd.to_dlpack())
        del nd
        if uniq.size != idx.size or not np.array_equal(uniq, idx):
            frames = frames.index_select(0, torch.from_numpy(inverse.reshape(-1)).to(frames.device))
        return frames, ""


def _require_cuda_decord(device_id: int) -> None:
    """Fail at construction, in one line, when decord cannot decode on GPU ``device_id``."""
    version = getattr(decord, "__version__", "?")
    if decord.get_global_func("device_api.gpu", allow_missing=True) is None:
        raise RuntimeError(
            f"decoder=decord_gpu needs decord built with CUDA (NVDEC); the installed decord {version} is "
            "CPU-only. Use video/decoder=decord_cpu, or build decord from source with -DUSE_CUDA=ON"
        )
    if not decord.gpu(device_id).exist:
        raise RuntimeError(
            f"decoder=decord_gpu: GPU {device_id} is not visible to decord {version} "
            "(check CUDA_VISIBLE_DEVICES and decoder.device_id), or use video/decoder=decord_cpu"
        )


def make_cpu_decoder(*, num_threads: int = 1, timeout_s: float | None = 30.0) -> DecordDecoder:
    return DecordDecoder(("cpu", 0), num_threads=num_threads, timeout_s=timeout_s)


def make_gpu_decoder(
    device_id: int, *, num_threads: int = 1, timeout_s: float | None = 30.0
) -> DecordDecoder:
    _require_cuda_decord(device_id)
    return DecordDecoder(("gpu", device_id), num_threads=num_threads, timeout_s=timeout_s)
