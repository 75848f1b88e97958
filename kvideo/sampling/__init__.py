"""Sampling policies (registered on import) and the stable ``timestamps`` entry point."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvideo.registry import SAMPLING_POLICIES
from kvideo.sampling import policies as _policies  # importing it registers the built-ins

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def timestamps(  # noqa: PLR0913 (stable: golden tests outside the repository call it by these keywords)
    policy: str,
    *,
    duration: float,
    fps: float,
    min_frames: int,
    max_frames: int,
    num_frames: int | None = None,
    native_fps: float | None = None,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    frame_starts: Sequence[float] | npt.NDArray[np.float64] | None = None,
) -> list[float]:
    """Timestamps in seconds at which ``policy`` samples a clip of ``duration`` seconds.

    Kept stable: golden tests outside this repository call it. ``num_frames`` and
    ``native_fps`` describe the clip's real frames (the ``qwen`` policy counts them);
    ``frame_starts`` (``ClipMeta.frame_starts``, optional) are their start times, which lets
    ``qwen`` name the frames it picks exactly on variable-frame-rate video;
    ``seed``/``epoch``/``index`` key the randomness of ``random_segment``.

    Raises ``ValueError`` for ``fps <= 0``, ``min_frames < 1`` or ``min_frames > max_frames``,
    whatever the policy, and ``KeyError`` for an unknown policy.
    """
    fn = SAMPLING_POLICIES.get(policy)
    fps, min_frames, max_frames = float(fps), int(min_frames), int(max_frames)
    _policies.check_arguments(fps, min_frames, max_frames)
    return fn(
        duration=float(duration),
        fps=fps,
        min_frames=min_frames,
        max_frames=max_frames,
        num_frames=num_frames,
        native_fps=native_fps,
        seed=seed,
        epoch=epoch,
        index=index,
        frame_starts=frame_starts,
    )


__all__ = ["timestamps"]
