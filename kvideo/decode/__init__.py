"""Decoders: path (or a file's bytes, ``VideoBytes``) + sampling function -> uint8 frames and
their real display times.

Importing this package registers ``decord_cpu``, ``decord_gpu``, ``pyav_cpu`` and ``nvdec`` in
``kvideo.registry.DECODERS`` and nothing heavier: torch, decord and PyAV are imported by
the factories, because config validation imports this module and ``train.py --cfg job``
must stay under a second.

``decode_at(path, stamps)`` is the stable one-call entry point (the path training uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvideo.decode.errors import SKIP_REASONS, DecodeError
from kvideo.decode.types import ClipMeta, DecodedClip, SampleFn, VideoBytes, VideoDecoder, VideoSource
from kvideo.registry import DECODERS

if TYPE_CHECKING:
    from kvideo.config.decoder import DecoderConfig

__all__ = [
    "SKIP_REASONS",
    "ClipMeta",
    "DecodeError",
    "DecodedClip",
    "SampleFn",
    "VideoBytes",
    "VideoDecoder",
    "VideoSource",
    "build_decoder",
    "decode_at",
    "decord_cpu",
    "decord_gpu",
    "nvdec",
    "pyav_cpu",
]


@DECODERS.register("decord_cpu")
def decord_cpu(cfg: DecoderConfig, *, local_rank: int = 0) -> VideoDecoder:
    """decord on the CPU; frames are CPU tensors. ``local_rank`` is unused."""
    from kvideo.decode.decord_decoder import make_cpu_decoder

    return make_cpu_decoder(num_threads=cfg.num_threads, timeout_s=cfg.timeout_s)


@DECODERS.register("decord_gpu")
def decord_gpu(cfg: DecoderConfig, *, local_rank: int = 0) -> VideoDecoder:
    """decord with NVDEC on ``cfg.device_id`` (``-1``: this process's ``local_rank``);
    frames stay on that CUDA device. Raises ``RuntimeError`` (one line, naming the
    alternatives) here, not at the first decode, when decord has no CUDA support."""
    from kvideo.decode.decord_decoder import make_gpu_decoder

    device = cfg.device_id if cfg.device_id >= 0 else local_rank
    return make_gpu_decoder(device, num_threads=cfg.num_threads, timeout_s=cfg.timeout_s)


@DECODERS.register("pyav_cpu")
def pyav_cpu(cfg: DecoderConfig, *, local_rank: int = 0) -> VideoDecoder:
    """FFmpeg through PyAV on the CPU, skipping non-reference frames no target needs;
    frames are CPU tensors. ``local_rank`` is unused."""
    from kvideo.decode.pyav_decoder import make_pyav_decoder

    return make_pyav_decoder(num_threads=cfg.num_threads, timeout_s=cfg.timeout_s)


@DECODERS.register("nvdec")
def nvdec(cfg: DecoderConfig, *, local_rank: int = 0) -> VideoDecoder:
    """NVDEC through PyNvVideoCodec on ``cfg.device_id`` (``-1``: this process's ``local_rank``),
    in the training process; frames stay on that CUDA device. Raises ``RuntimeError`` (one line
    naming what is missing and the alternatives) here when the machine cannot decode with NVDEC."""
    from kvideo.decode.nvdec_decoder import make_nvdec_decoder

    device = cfg.device_id if cfg.device_id >= 0 else local_rank
    return make_nvdec_decoder(device, num_threads=cfg.num_threads, timeout_s=cfg.timeout_s)


def build_decoder(cfg: DecoderConfig, local_rank: int = 0) -> VideoDecoder:
    """The decoder ``cfg.name`` names, built for this process's ``local_rank``."""
    return DECODERS.get(cfg.name)(cfg, local_rank=local_rank)


def decode_at(
    path: str, stamps: Sequence[float], *, size: int | None = None, decoder: str = "decord_cpu"
) -> DecodedClip:
    """The frames displayed at ``stamps`` (seconds from the video's first shown frame).

    ``frames``: uint8 ``(len(stamps), H, W, 3)`` RGB, at native size or ``size`` x ``size``;
    ``times``: the display time of each returned frame (the frame on screen at a stamp
    starts at or before it). Same decoder code as training, with the default
    ``DecoderConfig`` guards (timeout included). Raises ``DecodeError`` with a reason from
    ``SKIP_REASONS`` for a file training would skip.
    """
    from kvideo.config.decoder import DecoderConfig

    times = [float(t) for t in stamps]
    if not times:
        raise ValueError("decode_at needs at least one timestamp")
    return build_decoder(DecoderConfig(name=decoder)).decode(str(path), lambda _meta: times, size=size)
