"""decord-backed decoders: ``decord_cpu`` and ``decord_gpu``.

Why decord: ``get_batch(indices)`` seeks to the keyframe before each target and decodes
forward, instead of decoding a whole clip sequentially. Guards against its known pains
(docs: /work/shared/DESIGN.md, Decoding):

* leaks with long-lived readers -> a fresh ``VideoReader`` per ``decode`` call, dropped
  before returning (and never kept alive by a raised exception's traceback);
* hangs -> every decode runs under ``DecoderConfig.timeout_s`` (``deadline.py``);
* frame tables that promise more than the file holds -> timestamp sanity clamp
  (``frame_index.Timeline``) and one tail-dropping retry (``_TAIL_GUARD``).

Frames reach torch through DLPack (zero-copy, ~0.1 ms) rather than ``asnumpy()``
(a full copy, ~1.9 ms for 17 frames of 596x336); ``decord.bridge.set_bridge`` is
avoided because it is process-global state.
"""

from __future__ import annotations

import re
from typing import Any

import decord
import numpy as np
import torch
from torch.utils.dlpack import from_dlpack

from kvideo.decode.checks import check_video_file
from kvideo.decode.deadline import DeadlineExceeded, DeadlineRunner
from kvideo.decode.errors import DecodeError
from kvideo.decode.frame_index import Segment, Timeline
from kvideo.decode.types import DecodedClip, SampleFn

# A truncated file's last packet is cut mid-way; decord counts it as a frame and then fails
# when its decoder thread reaches it. With B-frames the damaged packet can be shown up to
# 3 frames before the end (measured: libx264 bf=2, faststart MP4 cut at 40/60/80 %). The
# retry drops this many frames from the end of the table.
_TAIL_GUARD = 4

_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")

# decord 3.4 cannot emit some output widths: its scaler pads rows and the copy out then fails
# with this message (measured on x86-64: widths 1-4, 6, 8, 12, 16, 24, 48, 72 of 1..1024;
# 224, 256, 336, 384 and 448 work). For those, decode at native size and resize in torch.
_WIDTH_BUG = "DECORDArrayCopyFromTo"


def _short(e: BaseException) -> str:
    """One line of a decord/FFmpeg error, without its '[hh:mm:ss] file.cc:NN:' prefixes."""
    text = _DECORD_PREFIX.sub("", str(e)).strip().replace("\n", " ")
    text = text or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _has_video_stream(path: str) -> bool | None:
    """PyAV probe, used only on the error path to tell 'audio-only' from 'garbage'.
    None when PyAV cannot open the file either."""
    try:
        import av

        with av.open(path) as container:
            return len(container.streams.video) > 0
    except Exception:
        return None


def _resize_square(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8, antialiased bilinear."""
    x = frames.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class DecordDecoder:
    """``VideoDecoder`` on decord, on ``device`` ``("cpu", 0)`` or ``("gpu", i)``; frames
    come back on the matching torch device. Picklable (DataLoader workers started by spawn
    receive a copy)."""

    def __init__(
        self, device: tuple[str, int] = ("cpu", 0), *, num_threads: int = 1, timeout_s: float | None = 30.0
    ) -> None:
        kind, index = device
        if kind not in ("cpu", "gpu"):
            raise ValueError(f"device must be ('cpu', i) or ('gpu', i), got {device!r}")
        self.device = (kind, int(index))
        self.num_threads = int(num_threads)
        self.timeout_s = timeout_s
        self.ctx: Any = decord.cpu(self.device[1]) if kind == "cpu" else decord.gpu(self.device[1])
        self._runner = DeadlineRunner()
        self._unscalable: set[int] = set()  # output sizes decord failed to emit (_WIDTH_BUG)

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

    # -- public --------------------------------------------------------------------------

    def decode(
        self,
        path: str,
        sample: SampleFn,
        *,
        size: int | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> DecodedClip:
        """Decode the frames displayed at ``sample(meta)`` seconds (relative to ``start``).

        Raises ``DecodeError`` (reason in ``SKIP_REASONS``) for files that cannot be used;
        exceptions from ``sample`` itself and ``ValueError`` for bad arguments propagate.
        """
        path = str(path)
        if size is not None and size <= 0:
            raise ValueError(f"size must be positive or None, got {size}")
        check_video_file(path)
        try:
            if not self.timeout_s or self.timeout_s <= 0:
                return self._decode_now(path, sample, size, start, end)
            return self._runner.run(lambda: self._decode_now(path, sample, size, start, end), self.timeout_s)
        except DecodeError as e:
            failure = DecodeError(e.reason, e.path, e.detail)
        except DeadlineExceeded as e:
            failure = DecodeError("timeout", path, str(e))
        # Raised outside the except blocks: a fresh exception with no traceback or context,
        # so nothing keeps the failed reader (a local of the frames above) alive while the
        # caller holds on to the error, e.g. to log it to skipped.jsonl.
        raise failure

    # -- steps ---------------------------------------------------------------------------

    def _open(self, path: str, size: int | None) -> decord.VideoReader:
        side = -1 if size is None else int(size)
        try:
            return decord.VideoReader(
                path, ctx=self.ctx, width=side, height=side, num_threads=self.num_threads
            )
        except Exception as e:  # DECORDError, RuntimeError("Error reading ..."), AssertionError
            detail = _short(e)
        raise self._open_error(path, detail)

    @staticmethod
    def _open_error(path: str, detail: str) -> DecodeError:
        if "cannot find video stream" in detail:
            return DecodeError("no_video_stream", path, detail)
        if "Invalid frame count" in detail:
            return DecodeError("decode_error", path, "video stream has no frames")
        if _has_video_stream(path) is False:
            return DecodeError("no_video_stream", path, "container has no video stream")
        return DecodeError("unreadable", path, detail)

    @staticmethod
    def _timeline(vr: decord.VideoReader, path: str) -> Timeline:
        n = len(vr)
        try:
            table = vr.get_frame_timestamp(range(n))
        except IndexError:
            # len(vr) claims more frames than the timestamp table holds: decord has cached
            # the whole table before indexing it; the sanity clamp takes it from there.
            table = getattr(vr, "_frame_pts", None)
        except Exception as e:
            raise DecodeError("decode_error", path, f"frame timestamps: {_short(e)}") from None
        if table is None:
            raise DecodeError("decode_error", path, "no frame timestamps")
        try:
            return Timeline.from_table(table, reported_frames=n, fallback_fps=float(vr.get_avg_fps()))
        except ValueError as e:
            raise DecodeError("decode_error", path, str(e)) from None

    def _decode_now(
        self, path: str, sample: SampleFn, size: int | None, start: float | None, end: float | None
    ) -> DecodedClip:
        # Sizes decord cannot emit are decoded natively and resized in torch (see _WIDTH_BUG).
        decode_size = None if size in self._unscalable else size
        vr = self._open(path, decode_size)
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
            frames, idx = self._frames(vr, path, decode_size, idx, segment)
        finally:
            del vr
        if size is not None and (frames.shape[1] != size or frames.shape[2] != size):
            frames = _resize_square(frames, size)
        return DecodedClip(frames=frames, times=segment.times_of(idx), meta=meta)

    def _frames(
        self, vr: decord.VideoReader, path: str, size: int | None, idx: np.ndarray, segment: Segment
    ) -> tuple[torch.Tensor, np.ndarray]:
        """One ``get_batch`` over the de-duplicated, sorted indices, re-expanded to ``idx``.

        If decord cannot emit ``size`` (_WIDTH_BUG), the size is remembered and this batch
        is decoded at native size (the caller resizes). On any other failure, retry once on
        a fresh reader with every index clamped to ``num_frames - 1 - _TAIL_GUARD``: frames
        past a damaged tail are replaced by the last frame before it (``times`` then report
        that frame's real time). Returns the frames and the indices actually decoded."""
        batch, detail = self._get_batch(vr, idx)
        if batch is None and size is not None and _WIDTH_BUG in detail:
            self._unscalable.add(size)
            size = None
            batch, detail = self._get_batch_fresh(path, None, idx)
        if batch is None:
            limit = segment.timeline.num_frames - 1 - _TAIL_GUARD
            if limit < segment.first:
                raise DecodeError("decode_error", path, detail)
            idx = np.minimum(idx, limit)
            batch, retry_detail = self._get_batch_fresh(path, size, idx)
            if batch is None:
                raise DecodeError(
                    "decode_error",
                    path,
                    f"{detail}; retry without the last {_TAIL_GUARD} frames: {retry_detail}",
                )
        return batch, idx

    def _get_batch_fresh(
        self, path: str, size: int | None, idx: np.ndarray
    ) -> tuple[torch.Tensor | None, str]:
        vr = self._open(path, size)
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
            return None, _short(e)
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
