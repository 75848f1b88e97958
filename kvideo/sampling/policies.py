"""Frame-sampling policies: clip metadata in, timestamps (seconds) out.

Pure functions, no I/O: a sampler never opens a file. Each one reproduces a peer
project's rule exactly (KempnerForge's ``sample_timestamps``, Molmo2's
``uniform_last_frame``, qwen-vl-utils' ``smart_nframes``; the README's "Sampling policies"
table states each) so results can be compared across projects; golden tests pin them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from kvideo.registry import SAMPLING_POLICIES

if TYPE_CHECKING:
    import numpy.typing as npt


def check_arguments(fps: float, min_frames: int, max_frames: int) -> None:
    """Refuse a budget no policy can honour, as KempnerForge's ``sample_timestamps`` does.

    Without this, ``min_frames > max_frames`` quietly returns ``min_frames`` stamps (more than
    the batch has slots for) and ``fps <= 0`` divides by zero inside ``molmo2``.
    """
    if not math.isfinite(fps) or fps <= 0:  # KempnerForge's words first: its tests match them
        raise ValueError(f"fps must be positive and finite (got {fps})")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1 (got {min_frames})")
    if min_frames > max_frames:
        raise ValueError(f"min_frames ({min_frames}) must be <= max_frames ({max_frames})")


def _uniform_count(duration: float, fps: float, min_frames: int, max_frames: int) -> int:
    """KempnerForge's frame count: ``round(duration * fps)`` clamped to the budget."""
    return max(min_frames, min(max_frames, round(duration * fps)))


@SAMPLING_POLICIES.register("uniform")
def uniform(*, duration: float, fps: float, min_frames: int, max_frames: int, **_: object) -> list[float]:
    """The seed project's rule: n stamps spanning the clip, first and last included.

    The spacing is ``duration / (n - 1)``, not ``1 / fps``: fps only sets the count.
    """
    if duration <= 0:
        return [0.0]
    n = _uniform_count(duration, fps, min_frames, max_frames)
    if n <= 1:
        return [0.0]
    return [i * duration / (n - 1) for i in range(n)]


def _uniform_last_frame(duration: float, max_frames: int, max_fps: float | None) -> np.ndarray:
    """Molmo2's ``uniform_last_frame``: ``max_frames`` evenly spaced stamps, first and last
    instant included, unless ``max_fps`` is set and the clip is short enough to be sampled at
    that rate, when the stamps are ``max_fps``-spaced from 0 with the final instant appended."""
    if max_fps is None or (max_frames - 1) / max_fps < duration:
        return np.linspace(0.0, duration, max_frames)
    return np.append(np.arange(0.0, duration, 1.0 / max_fps), duration)


@SAMPLING_POLICIES.register("molmo2")
def molmo2(*, duration: float, fps: float, min_frames: int, max_frames: int, **_: object) -> list[float]:
    """Molmo2's ``uniform_last_frame`` with ``max_fps = fps``.

    Long clips get ``max_frames`` evenly spaced stamps; short ones are sampled at
    ``fps`` from 0 and the final instant is appended. Molmo2 has no minimum; ours
    spreads ``min_frames`` evenly when the rule yields fewer (``video/sampling=molmo2``
    sets ``min_frames: 1``, which turns that off).
    """
    if duration <= 0:
        return [0.0]
    stamps = _uniform_last_frame(duration, max_frames, max_fps=fps)
    if len(stamps) < min_frames:
        stamps = np.linspace(0.0, duration, min_frames)
    return [float(t) for t in stamps]


@SAMPLING_POLICIES.register("molmo2_no_max_fps")
def molmo2_no_max_fps(*, duration: float, max_frames: int, **_: object) -> list[float]:
    """Molmo2's ``uniform_last_frame`` with ``max_fps = None``: always ``max_frames`` stamps
    ``linspace(0, duration, max_frames)``, however short the clip.

    A policy of its own rather than a config knob: the ``video`` node's fields are fixed, and
    ``fps`` must stay positive for the other policies. ``fps`` and ``min_frames`` play no part.
    """
    if duration <= 0:
        return [0.0]
    return [float(t) for t in _uniform_last_frame(duration, max_frames, max_fps=None)]


def _floor_even(x: float) -> int:
    return int(math.floor(x / 2) * 2)


def _ceil_even(x: float) -> int:
    return int(math.ceil(x / 2) * 2)


def _qwen_count(total: int, native_fps: float, fps: float, min_frames: int, max_frames: int) -> int:
    """qwen-vl-utils' ``smart_nframes``: ``total / native_fps * fps`` frames, clamped to the
    even-rounded budget and the clip's frames, floored to a multiple of 2; at least 1 where
    qwen-vl-utils would raise."""
    lo = _ceil_even(min_frames)
    hi = _floor_even(min(max_frames, total))
    return max(1, _floor_even(min(max(total / native_fps * fps, lo), hi, total)))


def _at_frame_starts(
    indices: np.ndarray, frame_starts: Sequence[float] | npt.NDArray[np.float64], total: int
) -> list[float]:
    """The start times of frames ``indices``: the stamps that select exactly those frames."""
    starts = np.asarray(frame_starts, dtype=np.float64)
    if starts.shape != (total,):
        raise ValueError(f"frame_starts must hold one start per frame ({total}), got shape {starts.shape}")
    return [float(t) for t in starts[indices]]


@SAMPLING_POLICIES.register("qwen")
def qwen(
    *,
    duration: float,
    fps: float,
    min_frames: int,
    max_frames: int,
    num_frames: int | None = None,
    native_fps: float | None = None,
    frame_starts: Sequence[float] | npt.NDArray[np.float64] | None = None,
    **_: object,
) -> list[float]:
    """qwen-vl-utils' rule over the clip's real frames: n frames (FRAME_FACTOR 2), indices
    ``round(linspace(0, N - 1, n))``.

    qwen-vl-utils picks frame *indices*, so the stamps are the start times of the picked
    frames: ``frame_starts`` when the decoder passes them (exact on variable-frame-rate
    video), otherwise ``index / native_fps``, which is exact only for a constant rate.
    Unlike qwen-vl-utils this never raises when a clip has fewer frames than the
    minimum: it returns what the clip has (at least one frame).
    """
    if num_frames is None and frame_starts is not None:
        num_frames = len(frame_starts)
    if num_frames is None and native_fps is None:
        raise ValueError("qwen sampling needs the clip's num_frames or native_fps")
    if native_fps is None or native_fps <= 0:
        native_fps = num_frames / duration if duration > 0 and num_frames else 1.0
    if num_frames is None:
        num_frames = max(1, round(duration * native_fps))
    total = max(1, int(num_frames))
    n = _qwen_count(total, native_fps, fps, min_frames, max_frames)
    indices = np.round(np.linspace(0, total - 1, n)).astype(int)
    if frame_starts is not None:
        return _at_frame_starts(indices, frame_starts, total)
    limit = max(duration, 0.0)
    return [min(float(i) / native_fps, limit) for i in indices]


@SAMPLING_POLICIES.register("random_segment")
def random_segment(
    *,
    duration: float,
    fps: float,
    min_frames: int,
    max_frames: int,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    **_: object,
) -> list[float]:
    """TSN-style jitter: n equal segments, one random instant in each.

    The generator is keyed on (seed, epoch, index) rather than on worker state, so a
    resumed run, or one with a different worker count, sees the same frames.
    """
    if duration <= 0:
        return [0.0]
    n = _uniform_count(duration, fps, min_frames, max_frames)
    rng = np.random.default_rng([seed, epoch, index])
    offsets = rng.random(n)
    segment = duration / n
    return [float((i + offsets[i]) * segment) for i in range(n)]
