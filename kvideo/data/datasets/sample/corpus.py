"""The sample corpus generator: small, deterministic, real H.264 videos in the WebVid layout.

Why synthetic: the default ``python train.py`` must run anywhere with no download, yet
exercise the real path (container parsing, H.264 decode, frame sampling, captions).
Why this content: a coloured shape moves in one direction across a textured
background, and the caption names colour, shape and direction. Colour and shape are
visible in any single frame; direction is only visible in motion across two or more
frames, because the shape starts anywhere and wraps around the frame edges (every
frame's position is uniform whatever the direction). So per-attribute accuracy tells
"learned to look" from "learned to compare frames over time".

Layout written (the one the ``webvid`` builder reads, ``kvideo.data.datasets.webvid``)::

    <root>/raw/<name>/data/train/partitions/0000.csv   videoid,contentUrl,duration,page_dir,name
    <root>/raw/<name>/data/train/videos/<id[:2]>/<id[:4]>/<id[:6]>/<id>.mp4
    <root>/raw/<name>/data/val/partitions/0000.csv
    <root>/raw/<name>/data/val/videos/<id>.mp4
    <root>/raw/<name>/kvideo_sample.json               completion marker, written last

Determinism: clip ``i`` of a split draws everything from
``numpy.random.default_rng([seed, split_id, i])``, so it is the same whatever ``n``
is, and libx264 runs single-threaded, so the same seed gives byte-identical files
(with the same FFmpeg/libx264 build; another build may encode differently).

Concurrency: the corpus is written into a temporary sibling directory and renamed into
place, under an ``fcntl`` lock, so two processes (two DDP ranks, two runs) starting at
once generate it once, and a crash never leaves a half corpus under the final name.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

from kvideo.data.datasets.common import WEBVID_SPLIT_DIR, webvid_video_relpath
from kvideo.data.datasets.sample.captions import ATTRIBUTES, caption_for

log = logging.getLogger(__name__)

MARKER = "kvideo_sample.json"
# Bump when the content or encoding changes: an existing corpus with another version
# is regenerated instead of silently mixing old and new clips.
GENERATOR_VERSION = 1
SPLIT_IDS = {"train": 0, "validation": 1}  # seeds a clip's draws with its split
CSV_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")

FPS_RANGE = (8, 12)  # inclusive
DURATION_RANGE = (2.0, 4.0)  # seconds
SIZES = (64, 96)
SIZE_WEIGHTS = (0.75, 0.25)
# Total travel over the clip as a fraction of the frame. Kept below 1/2 so that, even
# with wrap-around, any two frames of a clip show the motion unambiguously.
TRAVEL_RANGE = (0.3, 0.45)
COLORS_RGB = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
}
DIRECTIONS_XY = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
X264_OPTIONS = {"preset": "ultrafast", "crf": "23", "threads": "1"}


@dataclass(frozen=True)
class ClipSpec:
    """Everything that defines one clip; derived from (seed, split_id, index) alone."""

    videoid: str
    color: str
    shape: str
    direction: str
    fps: int
    num_frames: int
    size: int
    start_xy: tuple[float, float]
    travel: float  # pixels over the whole clip
    radius: float
    noise_seed: int

    @property
    def caption(self) -> str:
        return caption_for(self.color, self.shape, self.direction)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def videoid_for(split_id: int, index: int) -> str:
    """WebVid-style numeric id: 8 digits, first digit 1 (train) or 2 (val), then the index.

    Numeric and at least 6 characters so the ``id[:2]/id[:4]/id[:6]`` nesting applies.
    """
    if not 0 <= index < 10_000_000:
        raise ValueError(f"clip index out of range: {index}")
    return f"{split_id + 1}{index:07d}"


def clip_spec(seed: int, split_id: int, index: int) -> ClipSpec:
    import numpy as np

    rng = np.random.default_rng([seed, split_id, index])
    color = ATTRIBUTES["color"][rng.integers(len(ATTRIBUTES["color"]))]
    shape = ATTRIBUTES["shape"][rng.integers(len(ATTRIBUTES["shape"]))]
    direction = ATTRIBUTES["direction"][rng.integers(len(ATTRIBUTES["direction"]))]
    fps = int(rng.integers(FPS_RANGE[0], FPS_RANGE[1] + 1))
    num_frames = round(float(rng.uniform(*DURATION_RANGE)) * fps)
    size = int(rng.choice(SIZES, p=SIZE_WEIGHTS))
    start_xy = (float(rng.uniform(0, size)), float(rng.uniform(0, size)))
    travel = float(rng.uniform(*TRAVEL_RANGE)) * size
    radius = float(rng.uniform(0.14, 0.18)) * size
    return ClipSpec(
        videoid=videoid_for(split_id, index),
        color=str(color),
        shape=str(shape),
        direction=str(direction),
        fps=fps,
        num_frames=num_frames,
        size=size,
        start_xy=start_xy,
        travel=travel,
        radius=radius,
        noise_seed=int(rng.integers(2**31)),
    )


def render_frames(spec: ClipSpec) -> Any:
    """``(T, S, S, 3)`` uint8 frames: textured background plus the moving, wrapping shape."""
    import numpy as np

    rng = np.random.default_rng(spec.noise_seed)
    size = spec.size
    # Static, low-saturation blocky texture: busy enough that the model cannot find the
    # shape by "any non-flat pixel", muted enough that the shape's colour stands out.
    blocks = rng.uniform(60, 150, size=(size // 8, size // 8, 1))
    tint = rng.uniform(0.9, 1.1, size=(1, 1, 3))
    background = np.kron(blocks * tint, np.ones((8, 8, 1)))
    background += rng.normal(0, 6, size=(size, size, 3))
    # Light per-frame noise so consecutive frames are never bit-identical (like a camera);
    # integer noise because drawing normals dominated the generation time.
    noise = rng.integers(-2, 3, size=(spec.num_frames, size, size, 3), dtype=np.int16)
    frames = np.clip(background.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    color = np.array(COLORS_RGB[spec.color], dtype=np.uint8)
    dx, dy = DIRECTIONS_XY[spec.direction]
    coords = np.arange(size, dtype=np.float32) + 0.5
    step = spec.travel / max(spec.num_frames - 1, 1)
    for t in range(spec.num_frames):
        cx = spec.start_xy[0] + dx * step * t
        cy = spec.start_xy[1] + dy * step * t
        # Toroidal offsets from the centre: the shape wraps around the edges.
        ox = (coords[None, :] - cx + size / 2) % size - size / 2
        oy = (coords[:, None] - cy + size / 2) % size - size / 2
        frames[t][_shape_mask(spec.shape, ox, oy, spec.radius)] = color
    return frames


def _shape_mask(shape: str, ox: Any, oy: Any, r: float) -> Any:
    if shape == "circle":
        return ox**2 + oy**2 <= r**2
    if shape == "square":
        half = 0.85 * r
        return (abs(ox) <= half) & (abs(oy) <= half)
    if shape == "triangle":
        # Apex up, base down; same orientation for every direction, so it carries no hint.
        height = 1.8 * r
        top, bottom = -height / 2, height / 2
        frac = (oy - top) / height  # 0 at the apex, 1 at the base
        return (oy >= top) & (oy <= bottom) & (abs(ox) <= frac * r)
    raise ValueError(f"unknown shape {shape!r}")


def encode_mp4(frames: Any, fps: int, path: Path) -> None:
    """H.264 (libx264, yuv420p) MP4, one thread so the bytes depend only on the frames."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options=dict(X264_OPTIONS))
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        time_base = Fraction(1, fps)
        for t, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = t
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def video_relpath(split: str, videoid: str) -> str:
    """Path of a clip relative to ``<corpus>/data``: nested for train, flat for val."""
    return os.path.join(WEBVID_SPLIT_DIR[split], "videos", webvid_video_relpath(split, videoid))


def _write_clip(job: tuple[str, int, int, int, str]) -> dict[str, str]:
    split, split_id, index, seed, data_dir = job
    spec = clip_spec(seed, split_id, index)
    path = Path(data_dir) / video_relpath(split, spec.videoid)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(render_frames(spec), spec.fps, path)
    seconds = round(spec.duration)
    return {
        "videoid": spec.videoid,
        "contentUrl": f"https://example.invalid/kvideo-sample/{spec.videoid}.mp4",
        "duration": f"PT00H00M{seconds:02d}S",  # WebVid's ISO-8601 style
        "page_dir": "sample",
        "name": spec.caption,
    }


def read_marker(corpus: Path) -> dict[str, Any] | None:
    """The completion marker's content, or ``None`` if the corpus is absent or incomplete."""
    try:
        marker: dict[str, Any] = json.loads((corpus / MARKER).read_text())
        return marker
    except (OSError, ValueError):
        return None


def _expected_marker(name: str, n_train: int, n_val: int, seed: int) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "name": name,
        "n_train": n_train,
        "n_val": n_val,
        "seed": seed,
    }


def is_complete(corpus: Path, *, name: str, n_train: int, n_val: int, seed: int) -> bool:
    marker = read_marker(corpus)
    if marker is None:
        return False
    expected = _expected_marker(name, n_train, n_val, seed)
    return all(marker.get(key) == value for key, value in expected.items())


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX ``fcntl``); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def generate(
    root: str | Path,
    *,
    name: str = "sample",
    n_train: int,
    n_val: int,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Write the corpus under ``<root>/raw/<name>`` (if not already there) and return that path.

    Idempotent: a complete corpus with the same name/size/seed/generator version is left
    alone; a mismatching or incomplete one is replaced. Read it back with
    ``video.dataset_type=webvid video.data_root=<root> video.dataset_name=<name>``.
    """
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1 (got {n_train}, {n_val})")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid corpus name {name!r}")
    raw = Path(root).expanduser().resolve() / "raw"
    corpus = raw / name
    if is_complete(corpus, name=name, n_train=n_train, n_val=n_val, seed=seed):
        return corpus
    with _locked(raw / f".{name}.lock"):
        # Another process may have finished while we waited for the lock.
        if is_complete(corpus, name=name, n_train=n_train, n_val=n_val, seed=seed):
            return corpus
        # Holding the lock, any other temp dir is a leftover of a killed generator.
        for stale in raw.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = raw / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        log.info(
            "generating the sample corpus once: %d clips into %s (%d encoder processes; about 25 s "
            "on 2 cores for the default 960)",
            n_train + n_val,
            corpus,
            workers,
        )
        t0 = time.perf_counter()
        try:
            _generate_into(tmp, name=name, n_train=n_train, n_val=n_val, seed=seed, workers=workers)
            if corpus.exists():
                shutil.rmtree(corpus)  # stale: incomplete or generated with other settings
            os.rename(tmp, corpus)
            log.info("generated the sample corpus in %.1f s: %s", time.perf_counter() - t0, corpus)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return corpus


def _generate_into(tmp: Path, *, name: str, n_train: int, n_val: int, seed: int, workers: int) -> None:
    data_dir = tmp / "data"
    counts = {"train": n_train, "validation": n_val}
    jobs = [
        (split, split_id, i, seed, str(data_dir))
        for split, split_id in SPLIT_IDS.items()
        for i in range(counts[split])
    ]
    rows = _run_jobs(jobs, workers)
    offset = 0
    for split in SPLIT_IDS:
        split_rows = rows[offset : offset + counts[split]]
        offset += counts[split]
        partitions = data_dir / WEBVID_SPLIT_DIR[split] / "partitions"
        partitions.mkdir(parents=True, exist_ok=True)
        with open(partitions / "0000.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(split_rows)
    marker = _expected_marker(name, n_train, n_val, seed)
    # Written last: its presence is what "complete" means.
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _run_jobs(jobs: Sequence[tuple[str, int, int, int, str]], workers: int) -> list[dict[str, str]]:
    """Every clip written, in order, with a progress bar on a terminal (``tqdm``'s own test)."""
    from tqdm import tqdm

    bar = partial(tqdm, total=len(jobs), desc="sample corpus", unit="clip", disable=None, leave=False)
    # Starting a spawned worker costs ~0.5 s (numpy + av imports): not worth it for a few clips.
    if workers <= 1 or len(jobs) < 64:
        return [_write_clip(job) for job in bar(jobs)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may be a training process with torch threads running.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, len(jobs) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(bar(pool.map(_write_clip, jobs, chunksize=chunk)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvideo.data.sample",
        description="Generate the synthetic WebVid-layout sample corpus (moving coloured shapes, "
        "H.264 MP4) under OUT/raw/NAME.",
    )
    parser.add_argument("--out", required=True, help="root directory (becomes video.data_root)")
    parser.add_argument("--n", type=int, required=True, help="number of train clips")
    parser.add_argument("--n-val", type=int, default=None, help="validation clips (default: max(1, n // 5))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="sample", help="corpus name (becomes video.dataset_name)")
    parser.add_argument("--workers", type=int, default=1, help="encoder processes")
    args = parser.parse_args(argv)
    n_val = args.n_val if args.n_val is not None else max(1, args.n // 5)
    started = time.perf_counter()
    try:
        corpus = generate(
            args.out, name=args.name, n_train=args.n, n_val=n_val, seed=args.seed, workers=args.workers
        )
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - started
    print(f"{corpus}: {args.n} train + {n_val} val clips ({elapsed:.1f} s)")
    print(
        f"use: video.dataset_type=webvid video.data_root={Path(args.out).expanduser().resolve()} "
        f"video.dataset_name={args.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
