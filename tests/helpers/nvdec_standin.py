"""A CPU ``FrameReader`` in PyNvVideoCodec's place (``kvideo.decode.nvdec_decoder``), so that the
``nvdec`` decoder's index mapping, recovery and prefetch machinery run in CI without a GPU: it
decodes the whole stream with PyAV and returns the frames at the display indices asked for, as
``SimpleDecoder.get_batch_frames_by_index`` does. ``fail`` makes its next calls raise, as a
broken NVDEC session does."""

from __future__ import annotations

import av
import numpy as np
import torch

from kvideo.decode.nvdec_decoder import NvdecDecoder
from kvideo.decode.types import VideoSource, open_target


class PyAVFrames:
    """Frames by display index, decoded on the CPU; ``calls`` counts every request."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls = 0

    def frames(self, source: VideoSource, indices: list[int]) -> torch.Tensor:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED: the decode session is broken (simulated)")
        decoded = []
        with av.open(open_target(source)) as container:
            stream = container.streams.video[0]
            packets = []
            try:
                packets += container.demux(stream)
            except av.error.FFmpegError:  # a cut file: the packets before the cut
                pass
            for packet in [*packets, None]:  # a damaged packet is passed over, as NVDEC goes on
                try:
                    frames = stream.codec_context.decode(packet)
                except av.error.FFmpegError:
                    continue
                decoded += [(frame.pts, frame.to_ndarray(format="rgb24")) for frame in frames]
        if not decoded:
            raise RuntimeError("no frame decodes")
        shown = sorted(decoded, key=lambda pair: pair[0])
        if max(indices) >= len(shown):
            raise ValueError(f"frame index {max(indices)} is past the stream's {len(shown)} frames")
        return torch.from_numpy(np.stack([shown[i][1] for i in indices]))


class Readers:
    """The reader factory: each call a new ``PyAVFrames`` (the first failing ``fail`` times),
    all kept in ``built``; picklable, as a decoder must be."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.built: list[PyAVFrames] = []

    def __call__(self) -> PyAVFrames:
        self.built.append(PyAVFrames(fail=self.fail if not self.built else 0))
        return self.built[-1]


def cpu_nvdec(*, fail: int = 0, timeout_s: float | None = 30.0) -> tuple[NvdecDecoder, Readers]:
    """An ``nvdec`` decoder whose readers are ``PyAVFrames``, and their factory."""
    readers = Readers(fail)
    return NvdecDecoder(readers, device=torch.device("cpu"), timeout_s=timeout_s), readers
