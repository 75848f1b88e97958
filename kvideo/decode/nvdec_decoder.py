"""``nvdec``: NVDEC decoding through NVIDIA's PyNvVideoCodec, in the training process.

Same contract as the CPU decoders (``kvideo.decode.types.VideoDecoder``): the frame displayed at
each stamp, with its real display time, bad files as ``DecodeError`` with the same reasons, under
the same ``decoder.timeout_s`` (``GuardedDecoder``). The split of the work:

* **Which frames.** The container's display timeline comes from PyAV's demuxer, without
  decoding (``kvideo.decode.display_index``): the timestamps are mapped to display indices by the
  rules every decoder shares (``frame_index``: VFR, start offsets, trims, the ``qwen`` policy's
  frame starts). A clip with an MP4 edit list's pre-roll, which NVDEC's own demuxer may number
  differently, is decoded by ``pyav_cpu`` instead and moved to the device.
* **The pixels.** A ``FrameReader`` decodes those display indices on the GPU. PyNvVideoCodec's
  ``SimpleDecoder`` (``PyNvFrames``) is reused across clips (``reconfigure_decoder``) and built
  afresh after any failure, since a failed decode can leave a reused decoder broken. Its frames
  are views of the decoder's own buffers, so each is cloned (through DLPack, on
  ``cuda:device_id``) before the next call; the frames are then resized on the device
  (``device_frames``) and normalized there by the loader, like every GPU batch. A shard member
  (``VideoBytes``) is handed to it as a file in ``/dev/shm`` while it decodes (``SimpleDecoder``
  takes a file name).

A damaged tail gets ``decord_gpu``'s rule: one retry on a fresh reader with the indices clamped
``TAIL_GUARD`` frames before the end. Tests put a CPU ``FrameReader`` in PyNvVideoCodec's place, so
the index mapping, the recovery and the prefetch machinery run without a GPU.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.dlpack import from_dlpack

from kvideo.decode.device_frames import resized
from kvideo.decode.display_index import display_index
from kvideo.decode.errors import DecodeError
from kvideo.decode.guarded import TAIL_GUARD, GuardedDecoder, short_error
from kvideo.decode.nvdec_probe import require_nvdec
from kvideo.decode.pyav_decoder import PyAVDecoder
from kvideo.decode.types import DecodedClip, SampleFn, VideoSource, source_name
from kvideo.resize import Resize


class FrameReader(Protocol):
    """Decodes frames of a video by display index."""

    def frames(self, source: VideoSource, indices: list[int]) -> torch.Tensor:
        """(len(indices), H, W, 3) uint8 RGB frames at ``indices`` (ascending, distinct), at
        native size, on the reader's device; raises on any failure."""
        ...


class PyNvFrames:
    """A ``FrameReader`` on PyNvVideoCodec's ``SimpleDecoder`` on GPU ``gpu_id``, one decoder
    reused from clip to clip."""

    def __init__(self, gpu_id: int) -> None:
        import PyNvVideoCodec as nvc  # type: ignore[import-not-found]  # the 'gpu' extra

        self.nvc = nvc
        self.gpu_id = gpu_id
        self._decoder: Any = None

    def frames(self, source: VideoSource, indices: list[int]) -> torch.Tensor:
        with file_of(source) as path:
            if self._decoder is None:
                self._decoder = self.nvc.SimpleDecoder(
                    path,
                    gpu_id=self.gpu_id,
                    use_device_memory=True,
                    output_color_type=self.nvc.OutputColorType.RGB,
                )
            else:
                self._decoder.reconfigure_decoder(path)
            decoded = self._decoder.get_batch_frames_by_index(indices)
            # Views of the decoder's surfaces: cloned before its next call reuses them.
            return torch.stack([from_dlpack(frame).clone() for frame in decoded])


@contextmanager
def file_of(source: VideoSource) -> Iterator[str]:
    """A path ``SimpleDecoder`` opens (it takes a file name): the source's own, or for a shard
    member (``VideoBytes``) a file in memory (``/dev/shm``) holding its bytes while it decodes."""
    if isinstance(source, str):
        yield source
        return
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    suffix = os.path.splitext(source.name)[1]
    with tempfile.NamedTemporaryFile(dir=folder, suffix=suffix, prefix="kvideo-member-") as member:
        member.write(source.data)
        member.flush()
        yield member.name


class _Lease:
    """The reader one decode uses, its own until the decode ends: a decode abandoned at its
    deadline keeps its reader, so the next decode never shares a decoder with it."""

    def __init__(self, reader: FrameReader | None) -> None:
        self.reader = reader


class NvdecDecoder(GuardedDecoder):
    """``VideoDecoder`` whose frames are decoded on ``device`` by a ``FrameReader``
    (``PyNvFrames`` on NVDEC), made afresh by ``new_reader`` after a failure; see the module
    docstring."""

    def __init__(
        self,
        new_reader: Callable[[], FrameReader],
        *,
        device: torch.device,
        num_threads: int = 1,
        timeout_s: float | None = 30.0,
    ) -> None:
        super().__init__(num_threads=num_threads, timeout_s=timeout_s)
        self.new_reader = new_reader
        self.device = device
        self._reader: FrameReader | None = None
        self._pyav = PyAVDecoder(num_threads=num_threads, timeout_s=None)  # edit-list clips
        self.fresh_readers = 0  # readers built, the first included (recovery is counted here)

    def _decode_now(
        self,
        source: VideoSource,
        sample: SampleFn,
        resize: Resize | None,
        start: float | None,
        end: float | None,
    ) -> DecodedClip:
        path = source_name(source)
        index = display_index(source)
        if index.preroll:
            clip = self._pyav._decode_now(source, sample, resize, start, end)
            return DecodedClip(clip.frames.to(self.device), clip.times, clip.meta)
        try:
            segment = index.timeline.segment(start, end)
        except ValueError as e:
            raise DecodeError("decode_error", path, str(e)) from None
        meta = segment.meta()
        stamps = list(sample(meta))
        if not stamps:
            raise ValueError(f"sample({meta}) returned no timestamps")
        idx = segment.indices_at(stamps)
        lease, self._reader = _Lease(self._reader), None
        frames, idx = self._frames(lease, source, idx, index.timeline.num_frames, segment.first)
        self._reader = lease.reader  # back for the next decode, after a success only
        size = None if resize is None else resize.output_size(index.width, index.height)
        return DecodedClip(frames=resized(frames, size), times=segment.times_of(idx), meta=meta)

    def _frames(
        self, lease: _Lease, source: VideoSource, idx: np.ndarray, num_frames: int, first: int
    ) -> tuple[torch.Tensor, np.ndarray]:
        """The frames at display indices ``idx`` (each distinct one decoded once), and the
        indices returned. After a failure: once more on a fresh reader (a failed decode can
        leave a reused decoder broken); then, if the first frame decodes (else the file is
        ``unreadable``), once without the last ``TAIL_GUARD`` frames."""
        frames, detail = self._read(lease, source, idx)
        if frames is None:
            frames, detail = self._read(lease, source, idx)
        if frames is not None:
            return frames, idx
        if self._read(lease, source, np.zeros(1, dtype=np.int64))[0] is None:
            # What every decoder calls a stream whose first frame does not decode.
            raise DecodeError(
                "unreadable", source_name(source), f"the first frame does not decode ({detail})"
            )
        limit = num_frames - 1 - TAIL_GUARD
        if limit < first:
            raise DecodeError("decode_error", source_name(source), detail)
        idx = np.minimum(idx, limit)
        frames, retry_detail = self._read(lease, source, idx)
        if frames is None:
            raise DecodeError(
                "decode_error",
                source_name(source),
                f"{detail}; retry without the last {TAIL_GUARD} frames: {retry_detail}",
            )
        return frames, idx

    def _read(self, lease: _Lease, source: VideoSource, idx: np.ndarray) -> tuple[torch.Tensor | None, str]:
        """(frames, "") or (None, the error in one line), the lease's reader dropped after a
        failure. Running out of device memory is no fault of the file: it propagates."""
        unique, inverse = np.unique(idx, return_inverse=True)
        if lease.reader is None:
            lease.reader = self.new_reader()
            self.fresh_readers += 1
        try:
            frames = lease.reader.frames(source, [int(i) for i in unique])
        except torch.cuda.OutOfMemoryError:
            lease.reader = None
            raise
        except Exception as e:  # PyNvVideoCodec raises RuntimeError/ValueError of its own
            lease.reader = None
            return None, short_error(e)
        if frames.shape[0] != unique.size:
            lease.reader = None
            return None, f"the decoder returned {frames.shape[0]} frames for {unique.size} indices"
        order = torch.from_numpy(inverse.reshape(-1)).to(frames.device)
        return frames.index_select(0, order), ""


def make_nvdec_decoder(
    device_id: int, *, num_threads: int = 1, timeout_s: float | None = 30.0
) -> NvdecDecoder:
    """The ``nvdec`` decoder on GPU ``device_id``; raises ``RuntimeError`` in one line here when
    this machine cannot decode with NVDEC (``nvdec_probe``)."""
    require_nvdec()
    return NvdecDecoder(
        partial(PyNvFrames, device_id),
        device=torch.device("cuda", device_id),
        num_threads=num_threads,
        timeout_s=timeout_s,
    )
