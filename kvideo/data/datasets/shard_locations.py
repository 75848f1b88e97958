"""Where a ``webdataset`` split's shards are: a local folder, file or brace pattern, or the same
in object storage (``kvideo.data.remote``); the rules are in ``kvideo.data.datasets.webdataset``.

Each shard comes with its ``Stamp``, what its listing is cached under and what tells a rewritten
shard apart: ``(size, mtime_ns, inode)`` for a local file, ``(size, ETag)`` for an object (read
from one listing request per folder, not one request per shard).
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

from kvideo.data.datasets.common import absolute_root, check_split
from kvideo.data.remote import filesystem, is_url, object_stamps
from kvideo.data.rows import Stamp

logger = logging.getLogger("kvideo.data.datasets.webdataset")

SHARD_SUFFIX = ".tar"
# Split folders, in the order they are looked for.
SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val")}

# Far above any corpus's shard count (LAION-5B is ~500k shards of 10k samples), far below what
# fills memory: a one-digit typo, {000000..99999999}, is 10^8 paths.
MAX_PATTERN_PATHS = 1_000_000


def shard_files(data_root: str, split: str) -> list[tuple[str, Stamp]]:
    """The ``split``'s shards in reading order, each with its ``Stamp`` (rules in the module
    docstrings): absolute paths, or URLs for a root in object storage."""
    check_split(split)
    if is_url(data_root):
        return remote_shards(data_root, split)
    return [(path, local_stamp(path)) for path in shard_paths(data_root, split)]


def local_stamp(shard: str) -> Stamp:
    """``(size, mtime_ns, inode)``: a shard rewritten after it was listed (in place or by a
    rename over it) is told apart by it when its samples are read (``rows.video_source``)."""
    st = os.stat(shard)
    return st.st_size, st.st_mtime_ns, st.st_ino


def shard_paths(data_root: str, split: str) -> list[str]:
    """The ``split``'s local shard files, absolute, in reading order."""
    root = absolute_root(data_root)
    if os.path.isdir(root):
        return _shards_in_folder(data_root, root, split)
    shards = _expand_pattern(data_root)
    if split == "validation":
        logger.warning(
            "webdataset: validation reads the train shards of %s (point video.data_root at a folder "
            "with train/ and validation/ for a held-out set)",
            data_root,
        )
    return shards


def _tars_in(folder: str) -> list[str]:
    names = sorted(name for name in os.listdir(folder) if name.endswith(SHARD_SUFFIX))
    return [os.path.join(folder, name) for name in names if os.path.isfile(os.path.join(folder, name))]


def _shards_in_folder(data_root: str, root: str, split: str) -> list[str]:
    looked = []
    for name in SPLIT_DIRS[split]:
        folder = os.path.join(root, name)
        looked.append(os.path.join(folder, f"*{SHARD_SUFFIX}"))
        if os.path.isdir(folder):
            shards = _tars_in(folder)
            if not shards:
                raise FileNotFoundError(
                    f"video.data_root={data_root!r}: no *{SHARD_SUFFIX} shards in {folder}"
                )
            return shards
    flat = _tars_in(root)
    if flat:
        if split == "validation":
            logger.warning(
                "webdataset: no validation/ or val/ folder in %s: validation reads its train shards", root
            )
        return flat
    looked.append(os.path.join(root, f"*{SHARD_SUFFIX}"))
    raise FileNotFoundError(
        f"video.data_root={data_root!r}: no {split} shards (looked for {', '.join(looked)})"
    )


def _expand_pattern(data_root: str) -> list[str]:
    expanded = list(dict.fromkeys(absolute_root(p) for p in _expanded(data_root)))
    found = [path for path in expanded if os.path.isfile(path)]
    if not found and len(expanded) == 1:
        raise FileNotFoundError(
            f"video.data_root={data_root!r}: no such folder or shard file (expected a folder with "
            f"train/ and validation/ *{SHARD_SUFFIX} shards, or a brace pattern such as "
            f"/data/shards/{{00000..00099}}{SHARD_SUFFIX})"
        )
    if not found:
        raise FileNotFoundError(
            f"video.data_root={data_root!r}: the pattern expands to {len(expanded)} paths and none "
            f"is a shard file (first: {expanded[0]})"
        )
    if len(found) < len(expanded):
        missing = [path for path in expanded if path not in set(found)]
        raise FileNotFoundError(
            f"video.data_root={data_root!r}: {len(missing)} of the {len(expanded)} shards it expands "
            f"to do not exist (first: {missing[0]})"
        )
    return found


def remote_shards(data_root: str, split: str) -> list[tuple[str, Stamp]]:
    """As ``shard_paths`` for a root in object storage; a store that cannot be reached, a bucket
    that does not exist and a root without shards are one line each."""
    fs, path = filesystem(data_root)
    try:
        if "{" in data_root or path.endswith(SHARD_SUFFIX):
            shards = _remote_pattern(fs, data_root)
            if split == "validation":
                logger.warning("webdataset: validation reads the train shards of %s", data_root)
            return shards
        looked = []
        for folder in [f"{path.rstrip('/')}/{name}" for name in SPLIT_DIRS[split]] + [path.rstrip("/")]:
            looked.append(f"{fs.unstrip_protocol(folder)}/*{SHARD_SUFFIX}")
            found = _remote_tars(fs, folder)
            if found:
                if folder == path.rstrip("/") and split == "validation":
                    logger.warning(
                        "webdataset: no validation/ or val/ in %s: validation reads its train shards",
                        data_root,
                    )
                return found
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # the client's connection and permission errors
        raise ValueError(
            f"video.data_root={data_root!r}: cannot read the store ({type(e).__name__}: {e})"
        ) from None
    bucket = path.split("/", 1)[0]
    if not _exists(fs, bucket):
        raise FileNotFoundError(
            f"video.data_root={data_root!r}: bucket {bucket!r} does not exist "
            "(or these credentials cannot see it)"
        )
    raise FileNotFoundError(
        f"video.data_root={data_root!r}: no {split} shards (looked for {', '.join(looked)})"
    )


def _exists(fs: Any, path: str) -> bool:
    try:
        return bool(fs.exists(path))
    except Exception:
        return False


def _remote_tars(fs: Any, folder: str) -> list[tuple[str, Stamp]]:
    """The ``*.tar`` objects directly in ``folder``, by name, with their stamps ([] when none)."""
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []
    tars = sorted(e["name"] for e in entries if e.get("type") == "file" and e["name"].endswith(SHARD_SUFFIX))
    stamps = object_stamps(fs, tars)
    return [(fs.unstrip_protocol(name), stamps[name]) for name in tars]


def _remote_pattern(fs: Any, data_root: str) -> list[tuple[str, Stamp]]:
    """A URL or brace pattern of URLs; every object it names must exist."""
    urls = _expanded(data_root)
    paths = [filesystem(url)[1] for url in urls]
    try:
        stamps = object_stamps(fs, paths)
    except FileNotFoundError:
        stamps = {}
    missing = [url for url, path in zip(urls, paths, strict=True) if path not in stamps]
    if missing:
        raise FileNotFoundError(
            f"video.data_root={data_root!r}: {len(missing)} of the {len(urls)} shards it names do not "
            f"exist (first: {missing[0]})"
        )
    return [(url, stamps[path]) for url, path in zip(urls, paths, strict=True)]


def _expanded(data_root: str) -> list[str]:
    """A brace pattern's paths in order, each once, at most ``MAX_PATTERN_PATHS``."""
    from braceexpand import braceexpand

    try:
        paths = list(itertools.islice(braceexpand(data_root), MAX_PATTERN_PATHS + 1))
    except ValueError:  # braceexpand.UnbalancedBracesError (not in its type stubs)
        raise ValueError(f"video.data_root={data_root!r}: unbalanced braces in the shard pattern") from None
    if len(paths) > MAX_PATTERN_PATHS:
        raise ValueError(
            f"video.data_root={data_root!r}: the shard pattern expands to more than "
            f"{MAX_PATTERN_PATHS:,} paths (a digit too many in its braces?)"
        )
    return list(dict.fromkeys(paths))
