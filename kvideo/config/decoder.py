"""``DecoderConfig``: which decoder turns timestamps into frames, and its guards."""

from __future__ import annotations

from dataclasses import dataclass

from kvideo.config.checks import require_at_most, require_non_negative, require_positive
from kvideo.registry import DECODERS

# Decoders whose frames come out on the GPU (decord with NVDEC, PyNvVideoCodec). Declared here, beside the
# config that names them, because the config layer needs the fact at compose time (the
# memory estimate) and must not import the decoders to learn it; everything else asks
# ``DecoderConfig.decodes_on_gpu``. A test checks the factories agree.
GPU_DECODERS = frozenset({"decord_gpu", "nvdec"})


@dataclass
class DecoderConfig:
    """Decoder selection and the knobs that guard against decord's known failure modes.

    name: Registry key of the decoder (``decord_cpu``, ``pyav_cpu``, ``decord_gpu`` or ``nvdec``).
    num_threads: decord's own decode threads per reader. 1 is right when DataLoader
        workers already use every core; more only helps a single-process loader.
    device_id: GPU for ``decord_gpu`` and ``nvdec``; ``-1`` means this process's local rank.
    timeout_s: Per-sample decode budget; a file that takes longer (decord can hang on
        containers that over-report their frame count) is abandoned and counted.
    prefetch: Batches decoded ahead by the GPU prefetch thread.
    streams: Clips a GPU decoder decodes at once, each on a thread with its own decoder (NVDEC
        runs several sessions side by side; one thread keeps it waiting on each clip's demux and
        copies). A batch's clips are decoded together (``VideoClipDataset.__getitems__``).
    """

    name: str = "decord_cpu"
    num_threads: int = 1
    device_id: int = -1
    timeout_s: float = 30.0
    prefetch: int = 2
    streams: int = 1

    @property
    def decodes_on_gpu(self) -> bool:
        """Frames come out on the GPU: decode in the training process (CUDA must not be
        initialised in forked DataLoader workers), with a prefetch thread instead of workers."""
        return self.name in GPU_DECODERS

    def __post_init__(self) -> None:
        decoders = DECODERS.names()  # entry-point metadata: no decoder module is imported
        if self.name not in decoders:
            raise ValueError(f"decoder.name must be one of {decoders} (got {self.name!r})")
        require_non_negative("decoder.num_threads", self.num_threads)
        if self.device_id < -1:
            raise ValueError(f"decoder.device_id must be -1 (local rank) or >= 0 (got {self.device_id})")
        require_positive("decoder.timeout_s", self.timeout_s)
        require_positive("decoder.prefetch", self.prefetch)
        require_positive("decoder.streams", self.streams)
        require_at_most("decoder.streams", self.streams, 64, "each stream holds a decoder and its frames")
