"""The decoder contract: what a sampler sees (``ClipMeta``), what a decoder returns
(``DecodedClip``) and the ``VideoDecoder`` protocol the dataset codes against.

Kept free of torch/decord imports at runtime so config validation and
``train.py --cfg job`` can import the decode package cheaply.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from kvideo.resize import Resize


@dataclass(frozen=True)
class ClipMeta:
    """The (possibly trimmed) segment a sampler chooses timestamps in.

    duration: seconds from the segment's start to the end of its last frame's display.
    native_fps: frames starting inside the segment / ``duration`` (the true mean rate,
        exact for CFR, the average for VFR; not the container's nominal rate).
    num_frames: frames whose display starts inside the segment (plus the frame already
        on screen at its start).
    frame_starts: display start of each of those ``num_frames`` frames, in seconds from the
        segment start (the frame already on screen at the start is at 0), or None when the
        decoder does not know them. A policy that picks frame *indices* (``qwen``) returns
        the starts of its picks, which the decoder maps back to exactly those frames even on
        variable-frame-rate video, where ``index / native_fps`` lands on other frames. Left out
        of ``==`` and ``repr``: it is the detail behind the three summary fields above.
    """

    duration: float
    native_fps: float
    num_frames: int
    frame_starts: Sequence[float] | npt.NDArray[np.float64] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass
class DecodedClip:
    """Frames and the times they are really displayed at.

    frames: uint8 (T, H, W, 3) RGB, on the CPU (or the GPU for ``decord_gpu``).
    times: ``times[i]`` is the display time (seconds, relative to the segment start; the
        untrimmed segment starts at the first frame) of ``frames[i]``. It differs from the
        requested timestamp by up to one frame interval, and is what the model should be
        told, not the request.
    meta: the segment the sampler saw.
    """

    frames: torch.Tensor
    times: list[float]
    meta: ClipMeta


SampleFn = Callable[[ClipMeta], list[float]]


@dataclass(frozen=True)
class VideoBytes:
    """A video file's whole content, already in memory: a member of a tar shard, read by
    offset. Decoders open it as they open a file (decord and PyAV both take a file object),
    so nothing is written to disk.

    name: what errors, ``skipped.jsonl`` and the blocklist call it (``<shard>#<member>``).
    data: the file's bytes.
    """

    name: str
    data: bytes = field(repr=False)

    def open(self) -> io.BytesIO:
        """A fresh file object over the bytes, positioned at 0: one per open, because a
        reader that gave up half-way leaves its own position anywhere."""
        return io.BytesIO(self.data)


# What a decoder reads: a file's path, or its bytes.
VideoSource = str | VideoBytes


def source_name(source: VideoSource) -> str:
    """The name a decode error gives ``source``: the path, or the in-memory file's name."""
    return source if isinstance(source, str) else source.name


def open_target(source: VideoSource) -> str | io.BytesIO:
    """What ``decord.VideoReader`` and ``av.open`` take for ``source``: the path, or a fresh
    file object over the bytes."""
    return source if isinstance(source, str) else source.open()


@runtime_checkable
class VideoDecoder(Protocol):
    """Turns a video (a path, or a file's bytes: ``VideoSource``) and a sampling function into
    frames.

    The sampler is a callable rather than a list of timestamps because the timestamps
    depend on the clip's duration/frame count, which only the opened container knows;
    passing the callable lets the decoder open the file once.
    """

    def decode(
        self,
        source: VideoSource,
        sample: SampleFn,
        *,
        size: int | Resize | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> DecodedClip: ...
