"""Dataset builders: a config in, a list of ``ClipRow`` out (registered in ``DATASETS``).

Light at import on purpose (stdlib + registry + rows only): config validation imports
this module to learn the registered names, and ``python train.py --cfg job`` must stay
under a second. Anything heavy (the sample generator's numpy/av) is imported lazily.

Every builder has the signature
``build(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]``
with ``split`` in ``("train", "validation")`` and ``max_samples=0`` meaning all rows. A
cap stops *reading* early (``itertools.islice`` over lazy CSV/JSONL readers): taking 100
rows of a 10M-row manifest reads 100 rows. Builders never stat video files; a missing
file is the decoder's ``missing`` skip, counted per reason by the trainer.

Built-ins:

``webvid``  WebVid-10M on disk. Partition CSVs (``*.csv``, read in sorted filename order,
    at least ``videoid`` and ``name`` = caption columns; others such as
    ``contentUrl,duration,page_dir`` are ignored) under
    ``<data_root>/raw/<dataset_name>/data/<train|val>/partitions/`` (the split folder is
    ``val`` for ``validation``; this is the layout of the public WebVid-10M metadata
    mirror, ``TempoFunk/webvid-10M``: ``data/train/partitions/0000.csv`` ...). Videos:
    train ones nested by id prefix, ``<id[:2]>/<id[:4]>/<id[:6]>/<id>.mp4``; validation
    ones flat, ``<id>.mp4``, under the first of these folders that exists:

    1. ``<data_root>/raw/<dataset_name>/data/<train|val>/videos/`` (self-contained; the
       sample corpus is written this way), or
    2. ``<data_root>/raw/videos/<train|validation>/`` (the seed project's layout, KempnerForge
       ``WebVidVideoDataset``: one video tree shared by the WebVid-style corpora of a root).

    If neither exists the rows point into (1) and every clip will be reported missing.

``manifest``  Your own list of clips. ``video.data_root`` is either a manifest *file*
    (``.jsonl`` or ``.csv``), read for whichever split is asked (so validation reads the
    same clips as training: use a folder for a held-out set), or a *folder* holding
    ``<split>.jsonl`` or ``<split>.csv`` (``train.*`` / ``validation.*``, also ``val.*``).
    Keys/columns: ``path``, ``caption``, optional ``start``/``end`` (seconds, empty/null =
    none) and ``id`` (default ``<manifest file name>:<line>``). Relative paths are
    relative to the manifest file's folder. A bad row raises ``ValueError`` naming the
    file and line.

``sample``  The embedded default: a synthetic corpus (``kvideo.data.sample``) generated
    on first use, then read exactly like ``webvid``. Root: ``video.data_root``, or when
    empty ``$KVIDEO_CACHE``, or ``~/.cache/kvideo``. The on-disk corpus name includes the
    size and seed, ``<dataset_name>-n<train>-<val>-s<seed>`` (e.g. ``sample-n800-160-s0``),
    so changing ``data.sample_*`` generates a new corpus instead of reusing a stale one.
    Generation is atomic and locked (safe when several ranks start at once).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kvideo.data.rows import ClipRow
from kvideo.registry import DATASETS
from kvideo.resources import usable_cores

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
# WebVid names the validation metadata/video folder "val".
WEBVID_SPLIT_DIR = {"train": "train", "validation": "val"}
# The seed project's shared video tree uses the split name itself.
SEED_VIDEO_SPLIT_DIR = {"train": "train", "validation": "validation"}
WEBVID_REQUIRED_COLUMNS = ("videoid", "name")
MANIFEST_SUFFIXES = (".jsonl", ".csv")
DEFAULT_CACHE = "~/.cache/kvideo"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (got {split!r})")


def _cap(rows: Iterator[ClipRow], max_samples: int) -> list[ClipRow]:
    """Materialise at most ``max_samples`` rows (0 = all) without reading further."""
    if max_samples < 0:
        raise ValueError(f"max_samples must be non-negative (got {max_samples})")
    return list(itertools.islice(rows, max_samples) if max_samples else rows)


# --------------------------------------------------------------------------- webvid


def webvid_partitions_dir(data_root: str, dataset_name: str, split: str) -> str:
    return os.path.join(data_root, "raw", dataset_name, "data", WEBVID_SPLIT_DIR[split], "partitions")


def webvid_videos_dir(data_root: str, dataset_name: str, split: str) -> str:
    """The folder holding this split's videos (see the module docstring for the order)."""
    own = os.path.join(data_root, "raw", dataset_name, "data", WEBVID_SPLIT_DIR[split], "videos")
    seed = os.path.join(data_root, "raw", "videos", SEED_VIDEO_SPLIT_DIR[split])
    if os.path.isdir(own):
        return own
    if os.path.isdir(seed):
        return seed
    logger.warning(
        "webvid: no %s video folder at %s or %s; every clip will be reported missing", split, own, seed
    )
    return own


def webvid_video_path(videos_dir: str, split: str, videoid: str) -> str:
    if split == "train":
        return os.path.join(videos_dir, videoid[:2], videoid[:4], videoid[:6], f"{videoid}.mp4")
    return os.path.join(videos_dir, f"{videoid}.mp4")


def read_webvid(data_root: str, dataset_name: str, split: str, max_samples: int = 0) -> list[ClipRow]:
    """Rows of a WebVid-layout corpus (the reader behind ``webvid`` and ``sample``)."""
    _check_split(split)
    root = os.path.abspath(os.path.expanduser(data_root))
    partitions = webvid_partitions_dir(root, dataset_name, split)
    if not os.path.isdir(partitions):
        raise FileNotFoundError(
            f"webvid: partitions folder not found: {partitions} (expected "
            f"<video.data_root>/raw/<video.dataset_name>/data/{WEBVID_SPLIT_DIR[split]}/partitions/*.csv "
            f"with video.data_root={data_root!r}, video.dataset_name={dataset_name!r})"
        )
    files = sorted(name for name in os.listdir(partitions) if name.endswith(".csv"))
    if not files:
        raise FileNotFoundError(f"webvid: no *.csv partition files in {partitions}")
    videos = webvid_videos_dir(root, dataset_name, split)
    rows = _iter_webvid_rows([os.path.join(partitions, name) for name in files], videos, split)
    return _cap(rows, max_samples)


def _iter_webvid_rows(files: list[str], videos_dir: str, split: str) -> Iterator[ClipRow]:
    for path in files:
        # utf-8-sig: tolerate a BOM that spreadsheet tools put before the header.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [col for col in WEBVID_REQUIRED_COLUMNS if col not in columns]
            if missing:
                raise ValueError(
                    f"webvid: {path} lacks column(s) {missing}: found {list(columns)}, "
                    f"expected at least {list(WEBVID_REQUIRED_COLUMNS)}"
                )
            for record in reader:
                videoid = (record.get("videoid") or "").strip()
                caption = record.get("name")
                if not videoid or caption is None:
                    raise ValueError(
                        f"webvid: {path} line {reader.line_num}: empty videoid or missing name field"
                    )
                if "/" in videoid or "\\" in videoid or videoid.startswith("."):
                    raise ValueError(f"webvid: {path} line {reader.line_num}: invalid videoid {videoid!r}")
                yield ClipRow(
                    path=webvid_video_path(videos_dir, split, videoid),
                    caption=caption,
                    clip_id=videoid,
                )


@DATASETS.register("webvid")
def build_webvid(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]:
    """WebVid-10M on-disk layout under ``video.data_root`` (see the module docstring)."""
    if not video.data_root:
        raise ValueError("video.data_root must be set for dataset_type=webvid")
    return read_webvid(video.data_root, video.dataset_name, split, max_samples)


# --------------------------------------------------------------------------- manifest


def resolve_manifest(data_root: str, split: str) -> str:
    """The manifest file to read for ``split``: ``data_root`` itself, or ``<dir>/<split>.*``."""
    path = os.path.abspath(os.path.expanduser(data_root))
    if os.path.isfile(path):
        if not path.endswith(MANIFEST_SUFFIXES):
            raise ValueError(f"video.data_root={data_root!r}: a manifest must be a .jsonl or .csv file")
        return path
    if os.path.isdir(path):
        stems = (split, "val") if split == "validation" else (split,)
        candidates = [os.path.join(path, stem + suffix) for stem in stems for suffix in MANIFEST_SUFFIXES]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate
        raise FileNotFoundError(
            f"video.data_root={data_root!r} is a folder without a {split} manifest "
            f"(looked for {', '.join(os.path.basename(c) for c in candidates)})"
        )
    raise FileNotFoundError(f"video.data_root={data_root!r}: no such manifest file or folder")


def read_manifest(manifest: str, max_samples: int = 0) -> list[ClipRow]:
    """Rows of one JSONL or CSV manifest file, reading no further than the cap."""
    manifest = os.path.abspath(manifest)
    records = _iter_jsonl(manifest) if manifest.endswith(".jsonl") else _iter_csv(manifest)
    base = os.path.dirname(manifest)
    rows = (_manifest_row(manifest, base, line, record) for line, record in records)
    return _cap(rows, max_samples)


def _iter_jsonl(manifest: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # utf-8-sig, as for CSV: a BOM before the first record is an editor's, not a JSON error.
    with open(manifest, encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"manifest {manifest} line {line_no}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"manifest {manifest} line {line_no}: expected a JSON object")
            yield line_no, record


def _iter_csv(manifest: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [col for col in ("path", "caption") if col not in columns]
        if missing:
            raise ValueError(
                f"manifest {manifest} lacks column(s) {missing}: found {list(columns)}, "
                "expected path, caption and optionally start, end, id"
            )
        for record in reader:
            # Empty CSV cells mean "not given", like a missing/null JSON key.
            yield reader.line_num, {key: value for key, value in record.items() if value not in ("", None)}


def _manifest_row(manifest: str, base: str, line: int, record: dict[str, Any]) -> ClipRow:
    where = f"manifest {manifest} line {line}"
    for key in ("path", "caption"):
        if key not in record or record[key] is None:
            raise ValueError(f"{where}: missing required key {key!r}")
        if not isinstance(record[key], str):
            raise ValueError(f"{where}: {key!r} must be a string (got {record[key]!r})")
    if not record["path"].strip():
        raise ValueError(f"{where}: empty 'path'")
    start = _seconds(record.get("start"), "start", where)
    end = _seconds(record.get("end"), "end", where)
    if start is not None and start < 0:
        raise ValueError(f"{where}: start must be >= 0 (got {start})")
    if start is not None and end is not None and start >= end:
        raise ValueError(f"{where}: start ({start}) must be < end ({end})")
    if end is not None and end <= 0:
        raise ValueError(f"{where}: end must be > 0 (got {end})")
    path = os.path.normpath(os.path.join(base, os.path.expanduser(record["path"])))
    clip_id = record.get("id")
    return ClipRow(
        path=path,
        caption=record["caption"],
        start=start,
        end=end,
        clip_id=str(clip_id) if clip_id is not None else f"{os.path.basename(manifest)}:{line}",
    )


def _seconds(value: Any, key: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: {key} must be a number of seconds (got {value!r})")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key} must be a number of seconds (got {value!r})") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{where}: {key} must be finite (got {value!r})")
    return seconds


@DATASETS.register("manifest")
def build_manifest(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]:
    """A JSONL/CSV manifest file, or a folder of per-split manifests, at ``video.data_root``."""
    _check_split(split)
    if not video.data_root:
        raise ValueError(
            "video.data_root must be set for dataset_type=manifest "
            "(a .jsonl/.csv manifest file, or a folder holding train.jsonl / validation.jsonl)"
        )
    manifest = resolve_manifest(video.data_root, split)
    if split == "validation" and os.path.isfile(os.path.expanduser(video.data_root)):
        logger.warning(
            "manifest: validation reads the training manifest %s (point video.data_root at a folder "
            "with train.* and validation.* for a held-out set)",
            manifest,
        )
    return read_manifest(manifest, max_samples)


# --------------------------------------------------------------------------- sample


def sample_root(data_root: str) -> str:
    """Where the sample corpus lives: ``data_root``, else ``$KVIDEO_CACHE``, else ``~/.cache/kvideo``."""
    root = data_root or os.environ.get("KVIDEO_CACHE") or DEFAULT_CACHE
    return os.path.abspath(os.path.expanduser(root))


def sample_corpus_name(dataset_name: str, n_train: int, n_val: int, seed: int) -> str:
    return f"{dataset_name}-n{n_train}-{n_val}-s{seed}"


@DATASETS.register("sample")
def build_sample(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]:
    """The embedded synthetic corpus, generated on first use (see ``kvideo.data.sample``)."""
    _check_split(split)
    from kvideo.data import sample  # lazy: pulls in numpy (and av when generating)

    root = sample_root(video.data_root)
    name = sample_corpus_name(
        video.dataset_name, data.sample_train_clips, data.sample_val_clips, data.sample_seed
    )
    # Returns at once when the corpus is complete; otherwise generates it (locked, atomic).
    sample.generate(
        root,
        name=name,
        n_train=data.sample_train_clips,
        n_val=data.sample_val_clips,
        seed=data.sample_seed,
        workers=max(1, min(4, usable_cores())),
    )
    return read_webvid(root, name, split, max_samples)
