"""A deterministic, WebVid-like benchmark corpus (H.264 MP4s), built once and cached.

Why synthetic: benchmarks must run anywhere, offline, and be comparable between runs, so
the corpus is a pure function of ``CorpusConfig``. Why this content: decode cost depends on
what the encoder had to do, so the frames scroll and zoom a multi-scale texture, move a few
solid shapes and add a little grain (a flat or static picture decodes unrealistically fast).
Why these encoder settings: WebVid clips are 596x336, 25 fps, 5–30 s H.264 with the x264
default keyframe interval (250 frames, "long GOP"); some real corpora re-encode with short
GOPs, which is where a seek-to-keyframe decoder wins most, so both classes are present, plus
a few 1280x720 clips. ``threads=1`` (and ``scenecut=0``) keep the bytes reproducible and the
keyframe positions exactly as configured.

Layout: ``benchmarks/.corpus/<name>-<hash>/`` holds the clips, ``manifest.json`` (clips with
GOP class, size, duration, frame count, bytes) and ``manifest.jsonl`` (``path``/``caption``
rows for ``video.dataset_type=manifest``). The folder name carries a hash of the config, so
a changed config builds a new corpus and an unchanged one is reused (built in a temp folder
and renamed, so an interrupted build is never mistaken for a complete one).

CLI: ``python -m benchmarks.corpus [--quick] [--workers N]`` prints the manifest path.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

CORPUS_ROOT = Path(__file__).resolve().parent / ".corpus"
GENERATOR_VERSION = 1
GOP_CLASSES = ("long", "short", "720p")


@dataclass(frozen=True)
class CorpusConfig:
    """Everything the corpus bytes depend on (hashed into the folder name)."""

    name: str = "webvid-like"
    seed: int = 0
    n_long: int = 10
    n_short: int = 10
    n_720p: int = 3
    width: int = 596
    height: int = 336
    fps: int = 25
    duration_range: tuple[float, float] = (5.0, 30.0)
    duration_range_720p: tuple[float, float] = (5.0, 12.0)
    long_gop: int = 250
    short_gop_range: tuple[int, int] = (25, 50)
    preset: str = "veryfast"  # B-frames + CABAC like typical web H.264, still quick to encode
    crf: int = 23

    def digest(self) -> str:
        blob = json.dumps({"v": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


FULL = CorpusConfig()
# Smoke-test corpus: one of each class, short, for ``--quick`` runs.
QUICK = CorpusConfig(
    name="quick", n_long=2, n_short=2, n_720p=1, duration_range=(5.0, 8.0), duration_range_720p=(4.0, 5.0)
)


@dataclass(frozen=True)
class ClipPlan:
    """One clip of the corpus; derived from (config, index) alone."""

    name: str
    gop_class: str
    gop: int
    width: int
    height: int
    fps: int
    num_frames: int
    seed: int


def plan(cfg: CorpusConfig) -> list[ClipPlan]:
    """The clips of ``cfg`` in a fixed order: long GOP, short GOP, then 720p (alternating GOPs)."""
    clips = []
    classes = ["long"] * cfg.n_long + ["short"] * cfg.n_short + ["720p"] * cfg.n_720p
    for index, gop_class in enumerate(classes):
        rng = np.random.default_rng([cfg.seed, index])
        if gop_class == "720p":
            width, height = 1280, 720
            duration = rng.uniform(*cfg.duration_range_720p)
            long_gop = (index - cfg.n_long - cfg.n_short) % 2 == 0
        else:
            width, height = cfg.width, cfg.height
            duration = rng.uniform(*cfg.duration_range)
            long_gop = gop_class == "long"
        short = int(rng.integers(cfg.short_gop_range[0], cfg.short_gop_range[1] + 1))
        clips.append(
            ClipPlan(
                name=f"{index:03d}_{gop_class}",
                gop_class=gop_class,
                gop=cfg.long_gop if long_gop else short,
                width=width,
                height=height,
                fps=cfg.fps,
                num_frames=round(duration * cfg.fps),
                seed=int(rng.integers(2**31)),
            )
        )
    return clips


def render(clip: ClipPlan) -> Iterator[np.ndarray]:
    """Frames ``(H, W, 3)`` uint8, generated lazily (a 720p clip would not fit comfortably).

    Cost matters (the corpus build is part of the suite's 10-minute budget): the texture is
    sampled with two 1-D ``take``s instead of a 2-D fancy index, and grain is added in uint8
    from a small bank on a texture whose range leaves room for it (no int16 round-trip).
    """
    rng = np.random.default_rng(clip.seed)
    h, w = clip.height, clip.width
    th, tw = 2 * h, 2 * w
    tex = np.zeros((th, tw, 3), np.float32)
    for scale, amp in ((64, 60.0), (16, 35.0), (4, 20.0)):
        blocks = rng.uniform(-1, 1, size=(th // scale + 1, tw // scale + 1, 3)).astype(np.float32)
        tex += amp * np.repeat(np.repeat(blocks, scale, 0), scale, 1)[:th, :tw]
    tex = np.clip(tex + 128, 0, 249).astype(np.uint8)
    grain = rng.integers(0, 7, size=(8, h, w, 3), dtype=np.uint8)
    vx, vy = rng.uniform(-3, 3, size=2)
    zoom_amp, zoom_period = rng.uniform(0.05, 0.3), rng.uniform(40, 120)
    shapes = [
        (
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(-6, 6),
            rng.uniform(-4, 4),
            int(rng.uniform(0.05, 0.2) * h),
            rng.integers(0, 256, 3).astype(np.uint8),
        )
        for _ in range(4)
    ]
    ys = np.arange(h, dtype=np.float32) - h / 2
    xs = np.arange(w, dtype=np.float32) - w / 2
    for t in range(clip.num_frames):
        scale = 1 + zoom_amp * np.sin(2 * np.pi * t / zoom_period)
        rows = (ys * scale + h + vy * t).astype(np.int64) % th
        cols = (xs * scale + w + vx * t).astype(np.int64) % tw
        frame = tex.take(rows, axis=0).take(cols, axis=1)
        frame += grain[t % len(grain)]
        for x0, y0, dx, dy, r, color in shapes:
            x, y = int(x0 + dx * t) % (w - r), int(y0 + dy * t) % (h - r)
            frame[y : y + r, x : x + r] = color
        yield frame


def encode(clip: ClipPlan, cfg: CorpusConfig, path: Path) -> None:
    """libx264 yuv420p MP4 with exactly ``clip.gop`` frames between keyframes."""
    import av

    options = {
        "preset": cfg.preset,
        "crf": str(cfg.crf),
        "threads": "1",
        "x264-params": f"keyint={clip.gop}:min-keyint={clip.gop}:scenecut=0",
    }
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=clip.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        stream.codec_context.thread_count = 1
        time_base = Fraction(1, clip.fps)
        for t, image in enumerate(render(clip)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _build_one(job: tuple[ClipPlan, CorpusConfig, str]) -> dict[str, Any]:
    clip, cfg, folder = job
    path = Path(folder) / f"{clip.name}.mp4"
    encode(clip, cfg, path)
    return {
        "name": clip.name,
        "file": path.name,
        "gop_class": clip.gop_class,
        "gop": clip.gop,
        "width": clip.width,
        "height": clip.height,
        "fps": clip.fps,
        "num_frames": clip.num_frames,
        "duration": clip.num_frames / clip.fps,
        "bytes": path.stat().st_size,
    }


def corpus_dir(cfg: CorpusConfig) -> Path:
    return CORPUS_ROOT / f"{cfg.name}-{cfg.digest()}"


def load_manifest(cfg: CorpusConfig) -> dict[str, Any] | None:
    """The manifest of an already-built corpus, with absolute clip paths; ``None`` if not built."""
    folder = corpus_dir(cfg)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    for clip in data["clips"]:
        clip["path"] = str(folder / clip["file"])
    data["jsonl"] = str(folder / "manifest.jsonl")
    return data


def build(cfg: CorpusConfig = FULL, *, workers: int | None = None, verbose: bool = True) -> dict[str, Any]:
    """Build (or reuse) the corpus for ``cfg`` and return its manifest (see ``load_manifest``).

    Building uses ``workers`` processes (default: all cores): each clip is encoded with one
    x264 thread, so parallelism across clips keeps the bytes deterministic.
    """
    cached = load_manifest(cfg)
    if cached is not None:
        if verbose:
            print(f"corpus: reusing {corpus_dir(cfg)} ({len(cached['clips'])} clips)")
        return cached
    folder = corpus_dir(cfg)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clips = plan(cfg)
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    # Longest first so the last worker is not left with the biggest clip.
    order = sorted(clips, key=lambda c: -c.num_frames * c.width * c.height)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        built = {e["name"]: e for e in pool.map(_build_one, [(c, cfg, str(tmp)) for c in order])}
    entries = [built[c.name] for c in clips]
    build_s = time.perf_counter() - start
    manifest = {
        "config": dataclasses.asdict(cfg),
        "digest": cfg.digest(),
        "generator_version": GENERATOR_VERSION,
        "build_seconds": round(build_s, 2),
        "total_frames": sum(e["num_frames"] for e in entries),
        "total_bytes": sum(e["bytes"] for e in entries),
        "clips": entries,
    }
    with open(tmp / "manifest.jsonl", "w") as handle:
        for e in entries:
            caption = f"synthetic {e['gop_class']} gop {e['gop']} clip {e['name']}"
            handle.write(json.dumps({"path": e["file"], "caption": caption}) + "\n")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if folder.exists():  # a concurrent build won the race; keep theirs
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, folder)
    if verbose:
        print(
            f"corpus: built {len(entries)} clips ({manifest['total_frames']} frames) "
            f"in {build_s:.1f} s -> {folder}"
        )
    result = load_manifest(cfg)
    assert result is not None
    result["built_now"] = True
    return result


def select(manifest: dict[str, Any], n: int | None) -> dict[str, Any]:
    """``manifest`` with at most ``n`` clips (``None``: all), taken round-robin over the GOP
    classes in corpus order, so that even a 3-clip smoke run has one clip of each class."""
    if n is None or n >= len(manifest["clips"]):
        return manifest
    by_class = [[c for c in manifest["clips"] if c["gop_class"] == g] for g in GOP_CLASSES]
    picked: list[dict[str, Any]] = []
    while len(picked) < n:
        for clips in by_class:
            if clips and len(picked) < n:
                picked.append(clips.pop(0))
    order = {c["name"]: i for i, c in enumerate(manifest["clips"])}
    return {**manifest, "clips": sorted(picked, key=lambda c: order[c["name"]]), "selected_clips": n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small smoke-test corpus")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    manifest = build(QUICK if args.quick else FULL, workers=args.workers)
    for clip in manifest["clips"]:
        print(
            f"  {clip['name']:<12} gop {clip['gop']:>3}  {clip['width']}x{clip['height']}  "
            f"{clip['duration']:5.1f} s  {clip['bytes'] / 1e6:5.2f} MB"
        )
    print(manifest["jsonl"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
