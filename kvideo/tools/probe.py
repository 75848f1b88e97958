"""Probe one video file (or a tar shard's sample): can training use it, and what is it?

Why through the training decoder rather than a separate ffprobe-like path: a file is
"good" exactly when the decoder training uses returns its frames at the size training asks
for, and a bad file's reason is the same ``SKIP_REASONS`` entry training would count. Codec
name and native size come from PyAV (header only, ~1 ms), because decord does not expose
them.

No deadline here: ``kvideo.tools.validate`` runs probes in child processes and kills a child
whose probe overruns, which also contains hard crashes (a segfault in FFmpeg) that an
in-process thread deadline could not.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from kvideo.data.rows import ClipRow, video_source
from kvideo.decode.errors import DecodeError
from kvideo.decode.image import decode_image, is_image
from kvideo.decode.types import VideoSource, open_target
from kvideo.resize import Resize

if TYPE_CHECKING:
    from kvideo.config.decoder import DecoderConfig


class Prober:
    """Reusable per process (builds its decoder once); ``probe(path or row) -> record``.

    ``decoder``: the training decoder's config (a GPU decoder is probed with ``decord_cpu``).
    ``size``: the frame size training decodes at: a square side, a ``video.resize`` rule
    (``kvideo.resize.Resize``), or ``None`` (native size).
    ``frames``: how many evenly spaced frames to decode (first and last included when > 1).
    1 (open + first frame) is the cheap scan; it cannot see damage later in the file (a
    corrupt or truncated middle), which more frames catch at proportionally more cost.
    """

    def __init__(
        self, decoder: DecoderConfig | None = None, *, size: int | Resize | None = None, frames: int = 1
    ) -> None:
        from kvideo.config.decoder import DecoderConfig
        from kvideo.decode import build_decoder

        if frames < 1:
            raise ValueError(f"frames must be >= 1 (got {frames})")
        decoder = decoder or DecoderConfig()
        if decoder.decodes_on_gpu:  # probes run in forked CPU processes
            decoder = replace(decoder, name="decord_cpu")
        self._decoder = build_decoder(decoder)
        # kvideo.tools.validate's parent times each probe out. Not on the VideoDecoder protocol: the
        # built-ins (GuardedDecoder) honour it; a plugin decoder just gets the attribute, as before.
        self._decoder.timeout_s = None  # type: ignore[attr-defined]
        self._size = size
        self._sample = partial(_spread, frames)

    def probe(self, target: str | ClipRow) -> dict[str, Any]:
        """``{"path", "ok", "reason", "detail", "duration", "fps", "num_frames", "width",
        "height", "codec", "probe_s"}``; media fields are ``None`` for a bad file.

        ``target``: a video file's path, or a dataset row, opened as training opens it
        (``kvideo.data.rows.video_source``: a shard sample's bytes, a reason known from listing)."""
        t0 = time.perf_counter()
        row = target if isinstance(target, ClipRow) else ClipRow(path=str(target), caption="")
        record = failed_record(row.path, None, "")
        try:
            source = video_source(row)
            if is_image(row.path):  # as training reads a picture: one frame (kvideo.decode.image)
                clip = decode_image(source, self._size)
            else:
                clip = self._decoder.decode(source, self._sample, size=self._size)
        except DecodeError as e:
            record.update(reason=e.reason, detail=e.detail)
        except Exception as e:  # a decoder bug must not stop the scan: report it on this file
            record.update(reason="decode_error", detail=f"{type(e).__name__}: {e}"[:300])
        else:
            codec, width, height = _header(source)
            record.update(
                ok=True,
                duration=round(clip.meta.duration, 6),
                fps=round(clip.meta.native_fps, 6),
                num_frames=clip.meta.num_frames,
                width=width,
                height=height,
                codec=codec,
            )
            del clip
        record["probe_s"] = round(time.perf_counter() - t0, 6)
        return record


def failed_record(path: str, reason: str | None, detail: str) -> dict[str, Any]:
    """A probe's record of a file that gave no clip (``reason``), its media fields ``None``."""
    return {
        "path": path,
        "ok": False,
        "reason": reason,
        "detail": detail,
        "duration": None,
        "fps": None,
        "num_frames": None,
        "width": None,
        "height": None,
        "codec": None,
        "probe_s": None,
    }


def _spread(frames: int, meta: Any) -> list[float]:
    if frames == 1:
        return [0.0]
    return [meta.duration * i / (frames - 1) for i in range(frames)]


def _header(source: VideoSource) -> tuple[str | None, int | None, int | None]:
    """(codec name, native width, native height) from the container header."""
    try:
        import av

        with av.open(open_target(source)) as container:
            ctx = container.streams.video[0].codec_context
            return ctx.name, int(ctx.width), int(ctx.height)
    except Exception:
        return None, None, None
