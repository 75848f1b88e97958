"""Decoders: path + sampling function -> uint8 frames and their real display times.

Importing this package registers ``decord_cpu`` and ``decord_gpu`` in
``kvideo.registry.DECODERS`` and nothing heavier: torch and decord are imported by the
factories, because config validation imports this module and ``train.py --cfg job``
must stay under a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvideo.decode.errors import SKIP_REASONS, DecodeError
from kvideo.decode.types import ClipMeta, DecodedClip, SampleFn, VideoDecoder
from kvideo.registry import DECODERS

if TYPE_CHECKING:
    from kvideo.config.decoder import DecoderConfig

__all__ = [
    "SKIP_REASONS",
    "ClipMeta",
    "DecodeError",
    "DecodedClip",
    "SampleFn",
    "VideoDecoder",
    "build_decoder",
    "decord_cpu",
    "decord_gpu",
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


def build_decoder(cfg: DecoderConfig, local_rank: int = 0) -> VideoDecoder:
    """The decoder ``cfg.name`` names, built for this process's ``local_rank``."""
    return DECODERS.get(cfg.name)(cfg, local_rank=local_rank)
