"""Probe one video file: can training use it, and what is it?

Why through the training decoder (``DecordDecoder``) rather than a separate ffprobe-like
path: a file is "good" exactly when the decoder training uses can open it and return a
frame, and a bad file's reason is the same ``SKIP_REASONS`` entry training would count.
Codec name and nominal rate come from PyAV (header only, ~1 ms), because decord does not
expose them.

No deadline here: ``kvideo.validate`` runs probes in child processes and kills a child
whose probe overruns, which also contains hard crashes (a segfault in FFmpeg) that an
in-process thread deadline could not.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from kvideo.decode.errors import DecodeError


class Prober:
    """Reusable per process (builds its decoder once); ``probe(path) -> record``.

    ``frames``: how many evenly spaced frames to decode (first and last included when > 1).
    1 (open + first frame) is the cheap scan; it cannot see damage later in the file (a
    corrupt or truncated middle), which more frames catch at proportionally more cost.
    """

    def __init__(self, num_threads: int = 1, frames: int = 1) -> None:
        from kvideo.decode.decord_decoder import make_cpu_decoder

        if frames < 1:
            raise ValueError(f"frames must be >= 1 (got {frames})")
        self._decoder = make_cpu_decoder(num_threads=num_threads, timeout_s=None)
        self._sample = partial(_spread, frames)

    def probe(self, path: str) -> dict[str, Any]:
        """``{"path", "ok", "reason", "detail", "duration", "fps", "num_frames", "width",
        "height", "codec", "probe_s"}``; media fields are ``None`` for a bad file."""
        t0 = time.perf_counter()
        record: dict[str, Any] = {
            "path": path, "ok": False, "reason": None, "detail": "",
            "duration": None, "fps": None, "num_frames": None, "width": None, "height": None, "codec": None,
        }
        try:
            clip = self._decoder.decode(path, self._sample, size=None)
        except DecodeError as e:
            record.update(reason=e.reason, detail=e.detail)
        except Exception as e:  # a decoder bug must not stop the scan: report it on this file
            record.update(reason="decode_error", detail=f"{type(e).__name__}: {e}"[:300])
        else:
            _, height, width, _ = clip.frames.shape
            record.update(
                ok=True, duration=round(clip.meta.duration, 6), fps=round(clip.meta.native_fps, 6),
                num_frames=clip.meta.num_frames, width=int(width), height=int(height),
                codec=_codec_name(path),
            )
            del clip
        record["probe_s"] = round(time.perf_counter() - t0, 6)
        return record


def _spread(frames: int, meta: Any) -> list[float]:
    if frames == 1:
        return [0.0]
    return [meta.duration * i / (frames - 1) for i in range(frames)]


def _codec_name(path: str) -> str | None:
    try:
        import av

        with av.open(path) as container:
            return container.streams.video[0].codec_context.name
    except Exception:
        return None
