"""Tiny, deterministic test videos encoded with PyAV, plus broken-file helpers.

Every frame carries its own index in two flat gray bands on the left half of the picture
(``frame_levels``), so a test can tell which frame a decoder returned even after lossy
compression: ``frame_index_of(rgb)`` reads it back. The right half is a moving stripe
texture so P/B frames carry real residuals and seeking mistakes show up as pixel
differences, not just as a different gray level.

Plain functions (no pytest fixtures) so any test module can import them:
``from tests.helpers.videos import make_h264``. Each ``make_*`` writes ``path`` and returns it
as ``str``. Encodes are kept tiny (<= 2 s, <= 128x128) because the whole suite runs on 2 cores.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

# Gray levels of the two bands: 16 + 8*k stays inside limited-range luma (16..235) and
# 8 levels apart survives any sane quantiser; base 28 covers 784 frames.
_LEVEL0 = 16
_STEP = 8
_BASE = 28


def frame_levels(i: int) -> tuple[int, int]:
    """(top band, bottom band) gray levels that encode frame index ``i``."""
    if not 0 <= i < _BASE * _BASE:
        raise ValueError(f"frame index {i} out of the encodable range")
    return _LEVEL0 + _STEP * (i % _BASE), _LEVEL0 + _STEP * (i // _BASE)


def frame_rgb(i: int, width: int, height: int) -> np.ndarray:
    """The RGB picture (H, W, 3) uint8 of frame ``i``."""
    top, bottom = frame_levels(i)
    img = np.empty((height, width, 3), dtype=np.uint8)
    half_w = max(1, width // 2)
    half_h = max(1, height // 2)
    img[:half_h, :half_w] = top
    img[half_h:, :half_w] = bottom
    # Diagonal stripes moving 2 px per frame: motion the encoder has to predict.
    yy, xx = np.mgrid[0:height, half_w:width]
    stripes = (((xx + yy + 2 * i) // 4) % 2).astype(np.uint8)
    img[:, half_w:, 0] = 60 + 140 * stripes
    img[:, half_w:, 1] = 200 - 140 * stripes
    img[:, half_w:, 2] = 128
    return img


def frame_index_of(rgb: np.ndarray) -> int:
    """Read back the index encoded by ``frame_rgb`` from a decoded (H, W, 3) frame.

    Measures the band centres (away from the edges where chroma subsampling and
    scaling filters blur) and rounds to the nearest level.
    """
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    half_w, half_h = max(1, w // 2), max(1, h // 2)
    mx, my = max(1, half_w // 4), max(1, half_h // 4)
    top = rgb[my : half_h - my, mx : half_w - mx].astype(np.float64).mean()
    bottom = rgb[half_h + my : h - my, mx : half_w - mx].astype(np.float64).mean()
    lo = round((top - _LEVEL0) / _STEP)
    hi = round((bottom - _LEVEL0) / _STEP)
    return hi * _BASE + lo


def _encode(  # noqa: PLR0913 (one keyword per PyAV stream setting a test corpus varies)
    path: str | os.PathLike[str],
    pts: list[int],
    time_base: Fraction,
    *,
    codec: str,
    width: int,
    height: int,
    rate: int,
    gop: int,
    bframes: bool = False,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    rotation: int = 0,
) -> str:
    """Encode frames 0..len(pts)-1 with presentation times ``pts`` (in ``time_base``);
    ``rotation``: a display matrix of that many degrees (a phone held upright)."""
    path = str(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(path, "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = gop
        opts = dict(options or {})
        if codec == "libx264":
            opts.setdefault("preset", "ultrafast")
            opts.setdefault("bf", "2" if bframes else "0")
            opts.setdefault("keyint_min", str(gop))
            opts.setdefault("sc_threshold", "0")  # keyframes only where the GOP says
        elif codec in ("libvpx", "libvpx-vp9"):
            opts.setdefault("deadline", "realtime")
            opts.setdefault("cpu-used", "8")
            opts.setdefault("lag-in-frames", "0")
            opts.setdefault("b", "0")
            opts.setdefault("crf", "20")
        stream.options = opts
        if rotation:
            stream.set_display_rotation(rotation)
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(frame_rgb(i, width, height), format="rgb24")
            frame.pts = p
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_h264(
    path: str | os.PathLike[str],
    *,
    seconds: float = 1.0,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    gop: int = 250,
    bframes: bool = False,
    faststart: bool = False,
    rotation: int = 0,
) -> str:
    """Constant-frame-rate H.264 MP4. ``gop=250`` is WebVid's keyframe interval (one
    keyframe per short clip); ``faststart`` puts the moov atom first, which is what makes a
    truncated copy still open (it then over-reports its frame count); ``rotation``: a display
    matrix of that many degrees."""
    return _make_cfr(
        path,
        codec="libx264",
        seconds=seconds,
        fps=fps,
        width=width,
        height=height,
        gop=gop,
        bframes=bframes,
        container_options={"movflags": "faststart"} if faststart else None,
        rotation=rotation,
    )


def _make_cfr(
    path: str | os.PathLike[str],
    *,
    codec: str,
    seconds: float,
    fps: int,
    width: int,
    height: int,
    gop: int,
    **encode: Any,
) -> str:
    """Constant frame rate: frame i at i / fps (pts i in a 1/fps time base)."""
    n = max(1, round(seconds * fps))
    return _encode(
        path,
        list(range(n)),
        Fraction(1, fps),
        codec=codec,
        width=width,
        height=height,
        rate=fps,
        gop=gop,
        **encode,
    )


def make_vp9_webm(
    path: str | os.PathLike[str],
    *,
    seconds: float = 1.0,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    gop: int = 250,
) -> str:
    """Constant-frame-rate VP9 in WebM (millisecond timestamps, so times are rounded)."""
    return _make_cfr(path, codec="libvpx-vp9", seconds=seconds, fps=fps, width=width, height=height, gop=gop)


def make_vp8_webm(
    path: str | os.PathLike[str],
    *,
    seconds: float = 1.0,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    gop: int = 250,
) -> str:
    """Constant-frame-rate VP8 in WebM (decord users report inaccurate seeks on VP8)."""
    return _make_cfr(path, codec="libvpx", seconds=seconds, fps=fps, width=width, height=height, gop=gop)


def vfr_times(n: int = 30) -> list[float]:
    """Irregular frame start times (seconds): gaps of 20, 40, 80 and 120 ms in a fixed
    pattern, so 'the frame displayed at t' differs from 'frame round(t * fps)'."""
    gaps = (0.020, 0.040, 0.080, 0.120, 0.040)
    times = [0.0]
    for k in range(1, n):
        times.append(round(times[-1] + gaps[k % len(gaps)], 3))
    return times


def make_vfr(
    path: str | os.PathLike[str],
    *,
    times: list[float] | None = None,
    width: int = 64,
    height: int = 48,
    gop: int = 250,
    start: float = 0.0,
) -> str:
    """Variable-frame-rate H.264 MP4: frame i starts at ``start + times[i]`` seconds
    (millisecond time base). ``times`` defaults to ``vfr_times()``."""
    times = vfr_times() if times is None else times
    tb = Fraction(1, 1000)
    pts = [round((start + t) * 1000) for t in times]
    return _encode(path, pts, tb, codec="libx264", width=width, height=height, rate=25, gop=gop)


def make_offset_start(
    path: str | os.PathLike[str],
    *,
    start: float = 1.5,
    seconds: float = 1.0,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    gop: int = 250,
    codec: str = "libx264",
) -> str:
    """Constant-rate video whose first frame's pts is ``start`` seconds, not 0 (cut-out
    clips and MPEG-TS captures look like this). MKV/WebM keep the offset as-is; MP4
    stores it through an edit list."""
    n = max(1, round(seconds * fps))
    tb = Fraction(1, fps * 40)  # fine enough to hold start exactly for the usual rates
    first = round(start / tb)
    pts = [first + i * 40 for i in range(n)]
    return _encode(path, pts, tb, codec=codec, width=width, height=height, rate=fps, gop=gop)


def make_mpegts(
    path: str | os.PathLike[str],
    *,
    seconds: float = 1.0,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    gop: int = 12,
    bframes: bool = True,
    start: float = 1.4,
) -> str:
    """H.264 in MPEG-TS (90 kHz clock) starting at ``start`` s, as broadcast captures do.
    With B-frames this is a file decord 3.4 seeks wrongly in (frames one GOP late)."""
    n = max(1, round(seconds * fps))
    step = 90000 // fps
    pts = [round(start * 90000) + i * step for i in range(n)]
    return _encode(
        path,
        pts,
        Fraction(1, 90000),
        codec="libx264",
        width=width,
        height=height,
        rate=fps,
        gop=gop,
        bframes=bframes,
    )


def make_corrupt(src: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """Overwrite the middle 15 % of ``src`` with 0xFF bytes: a faststart MP4 still opens
    (its index is intact) but the H.264 NAL lengths in that range are garbage, so
    decoding any frame stored there fails."""
    data = bytearray(Path(src).read_bytes())
    lo, hi = int(len(data) * 0.45), int(len(data) * 0.60)
    data[lo:hi] = b"\xff" * (hi - lo)
    return write_bytes(path, bytes(data))


def make_odd_size(
    path: str | os.PathLike[str],
    *,
    seconds: float = 1.0,
    fps: int = 25,
    width: int = 97,
    height: int = 61,
    gop: int = 12,
) -> str:
    """H.264 at an odd frame size. yuv420p needs even dimensions, so this uses yuv444p
    (High 4:4:4), which libx264 accepts at any size."""
    n = max(1, round(seconds * fps))
    return _encode(
        path,
        list(range(n)),
        Fraction(1, fps),
        codec="libx264",
        width=width,
        height=height,
        rate=fps,
        gop=gop,
        pix_fmt="yuv444p",
    )


def make_audio_only(path: str | os.PathLike[str], *, seconds: float = 0.5, rate: int = 16000) -> str:
    """An AAC-only MP4/M4A (no video stream): a valid container decord must refuse."""
    path = str(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    t = np.arange(n, dtype=np.float32) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        chunk = 1024
        for s in range(0, n, chunk):
            frame = av.AudioFrame.from_ndarray(samples[None, s : s + chunk], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = s
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes = b"") -> str:
    """Write raw bytes (``b""`` gives a zero-byte file)."""
    path = str(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return path


def make_text_as_video(path: str | os.PathLike[str]) -> str:
    """A text file with a video extension (what a failed download often leaves behind)."""
    return write_bytes(path, b"<html><body>404 Not Found</body></html>\n" * 4)


def make_truncated(src: str | os.PathLike[str], path: str | os.PathLike[str], *, keep: float = 0.5) -> str:
    """Copy the first ``keep`` fraction of ``src`` to ``path`` (an interrupted download).
    Cut an ordinary MP4 and the trailing moov is gone (unopenable); cut a ``faststart`` one
    and the header still promises every frame while the data stops half-way."""
    data = Path(src).read_bytes()
    return write_bytes(path, data[: max(1, int(len(data) * keep))])


def pyav_frames(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference decode: every frame (N, H, W, 3) RGB and its display time in
    seconds relative to the first frame (``frame.time`` minus the first one), in display order."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    order = np.argsort(times, kind="stable")
    t = np.asarray(times)[order]
    return np.stack([frames[k] for k in order]), t - t[0]


def pyav_at(path: str | os.PathLike[str], stamps: list[float]) -> tuple[np.ndarray, list[float]]:
    """Reference frames displayed at ``stamps`` (seconds from the first frame): the last
    frame whose time <= stamp, clamped to the first/last frame."""
    frames, times = pyav_frames(path)
    idx = np.searchsorted(times, np.asarray(stamps, dtype=np.float64) + 1e-9, side="right") - 1
    idx = np.clip(idx, 0, len(times) - 1)
    return frames[idx], [float(times[i]) for i in idx]


def make_stream_copy_cut(src: str | os.PathLike[str], path: str | os.PathLike[str], *, cut: float) -> str:
    """What ``ffmpeg -ss CUT -i SRC -c copy PATH`` writes: the packets from the keyframe at
    or before ``cut`` on, unchanged, with timestamps shifted so ``cut`` is time 0. The MP4
    muxer records the shift in an edit list; the frames before ``cut`` (the pre-roll that
    decodes the first shown frame) carry negative times and a player never shows them."""
    path = str(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(path, "w") as out:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.dts is not None]
        shift = round(cut / stream.time_base)
        first = max(k for k, p in enumerate(packets) if p.is_keyframe and p.pts <= shift)
        copy = out.add_stream_from_template(stream)
        for p in packets[first:]:
            p.pts -= shift
            p.dts -= shift
            p.stream = copy
            out.mux(p)
    return path
