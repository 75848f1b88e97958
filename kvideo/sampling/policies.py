"""Frame-sampling policies: clip metadata in, timestamps (seconds) out.

Pure functions, no I/O: a sampler never opens a file. Each one reproduces a peer
project's rule exactly (see DESIGN.md) so results can be compared across projects;
golden tests pin those semantics.
"""

from __future__ import annotations

import math

import numpy as np

from kvideo.registry import SAMPLING_POLICIES


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


@SAMPLING_POLICIES.register("molmo2")
def molmo2(*, duration: float, fps: float, min_frames: int, max_frames: int, **_: object) -> list[float]:
    """Molmo2's ``uniform_last_frame`` with ``max_fps``.

    Long clips get ``max_frames`` evenly spaced stamps; short ones are sampled at
    ``fps`` from 0 and the final instant is appended. Molmo2 has no minimum; ours
    spreads ``min_frames`` evenly when the rule yields fewer.
    """
    if duration <= 0:
        return [0.0]
    if (max_frames - 1) / fps < duration:
        stamps = np.linspace(0.0, duration, max_frames)
    else:
        stamps = np.append(np.arange(0.0, duration, 1.0 / fps), duration)
    if len(stamps) < min_frames:
        stamps = np.linspace(0.0, duration, min_frames)
    return [float(t) for t in stamps]


def _floor_even(x: float) -> int:
    return int(math.floor(x / 2) * 2)


def _ceil_even(x: float) -> int:
    return int(math.ceil(x / 2) * 2)


@SAMPLING_POLICIES.register("qwen")
def qwen(
    *,
    duration: float,
    fps: float,
    min_frames: int,
    max_frames: int,
    num_frames: int | None = None,
    native_fps: float | None = None,
    **_: object,
) -> list[float]:
    """qwen-vl-utils' frame count (FRAME_FACTOR 2) over the clip's real frames.

    Unlike qwen-vl-utils this never raises when a clip has fewer frames than the
    minimum: it returns what the clip has (at least one frame).
    """
    if num_frames is None and native_fps is None:
        raise ValueError("qwen sampling needs the clip's num_frames or native_fps")
    if native_fps is None or native_fps <= 0:
        native_fps = num_frames / duration if duration > 0 and num_frames else 1.0
    if num_frames is None:
        num_frames = max(1, round(duration * native_fps))
    total = max(1, int(num_frames))
    lo = _ceil_even(min_frames)
    hi = _floor_even(min(max_frames, total))
    n = _floor_even(min(max(total / native_fps * fps, lo), hi, total))
    if n < 1:
        n = 1
    indices = np.round(np.linspace(0, total - 1, n)).astype(int)
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
