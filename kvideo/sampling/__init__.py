"""Sampling policies (registered on import) and the stable ``timestamps`` entry point."""

from __future__ import annotations

from kvideo.registry import SAMPLING_POLICIES
from kvideo.sampling import policies as _policies  # noqa: F401  (registers the built-ins)


def timestamps(
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
) -> list[float]:
    """Timestamps in seconds at which ``policy`` samples a clip of ``duration`` seconds.

    Kept stable: golden tests outside this repository call it. ``num_frames`` and
    ``native_fps`` describe the clip's real frames (the ``qwen`` policy counts them);
    ``seed``/``epoch``/``index`` key the randomness of ``random_segment``.
    """
    fn = SAMPLING_POLICIES.get(policy)
    return fn(
        duration=float(duration),
        fps=float(fps),
        min_frames=int(min_frames),
        max_frames=int(max_frames),
        num_frames=num_frames,
        native_fps=native_fps,
        seed=seed,
        epoch=epoch,
        index=index,
    )


__all__ = ["timestamps"]
