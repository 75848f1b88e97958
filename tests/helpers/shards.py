"""Tar shards as video2dataset writes them, built from real encoded clips.

A shard holds, per sample, ``<key>.mp4`` (or another video extension), ``<key>.txt`` (the
caption) and ``<key>.json`` (metadata), in that order, written with the stdlib's ``tarfile``
as webdataset's ``TarWriter`` writes them. ``clip_bytes`` encodes a small H.264 clip whose
frames carry their index (``tests.helpers.videos``), varied in length so some samples pad.
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tests.helpers import videos as V

# A sample: its key and its members' extensions -> bytes, in the order they are written.
Sample = tuple[str, dict[str, bytes]]


def clip_bytes(index: int, *, suffix: str = ".mp4") -> bytes:
    """A 1-2 s, 48x32, 10 fps clip (1, 1.5 or 2 s with ``index % 3``), encoded in the container
    ``suffix`` names (.mp4, .mkv, .mov, .avi: H.264; .webm: VP9)."""
    return _encoded(index % 3, suffix)


@functools.cache
def _encoded(length: int, suffix: str) -> bytes:
    seconds = 1.0 + length * 0.5
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip{suffix}"
        if suffix == ".webm":
            V.make_vp9_webm(path, seconds=seconds, fps=10, width=48, height=32, gop=12)
        else:
            V.make_h264(path, seconds=seconds, fps=10, width=48, height=32, gop=12)
        return path.read_bytes()


def sample(key: str, video: bytes | None, caption: str | None, *, ext: str = "mp4") -> Sample:
    """``key``'s members: the video (``None``: left out), the caption (``None``: left out) and
    video2dataset's metadata JSON."""
    members: dict[str, bytes] = {}
    if video is not None:
        members[ext] = video
    if caption is not None:
        members["txt"] = caption.encode()
    members["json"] = json.dumps({"key": key, "caption": caption, "status": "success"}).encode()
    return key, members


def write_shard(path: str | Path, samples: Iterable[Sample]) -> str:
    """An uncompressed tar of every sample's members, ``<key>.<ext>``, in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def write_corpus(folder: str | Path, sizes: Iterable[int], *, first: int = 0, prefix: str = "") -> list[str]:
    """Shards ``00000.tar``, ``00001.tar``, ... in ``folder`` with ``sizes[k]`` good samples each;
    keys ``<prefix><shard:05d><sample:04d>``, captions ``clip <n>`` numbered from ``first``
    across the shards. Returns the shard paths."""
    paths, n = [], first
    for k, size in enumerate(sizes):
        samples = []
        for j in range(size):
            samples.append(sample(f"{prefix}{k:05d}{j:04d}", clip_bytes(n), f"clip {n}"))
            n += 1
        paths.append(write_shard(Path(folder) / f"{k:05d}.tar", samples))
    return paths


# What a failed download leaves where a video should be.
BROKEN = b"<html><body>404 Not Found</body></html>\n" * 8


def write_split_corpus(root: Path) -> Path:
    """``root/train``: 12 samples in two shards, the second's third sample a corrupt video
    (``BROKEN``, counted ``unreadable``); ``root/val``: one shard of 4. Returns ``root``."""
    write_corpus(root / "train", [6])
    good = clip_bytes(1)
    broken = [sample(f"b{i}", BROKEN if i == 2 else good, f"clip b{i}") for i in range(6)]
    write_shard(root / "train" / "00001.tar", broken)
    write_corpus(root / "val", [4], first=100, prefix="v")
    return root
