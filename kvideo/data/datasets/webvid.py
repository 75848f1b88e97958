"""``webvid``: WebVid-10M / WebVid-2M (or any corpus in their layouts) on disk.

A split's metadata is looked for in these layouts, in this order; the first that holds a CSV
is read and the later ones are not looked at (``<s>`` is ``train``, or ``val`` for the
``validation`` split):

1. **The official download**, directly in ``video.data_root`` (what the official
   ``download.py --csv_path <data_root>/results_2M_train.csv --data_dir <data_root>`` leaves;
   with its defaults the CSV sits in the working folder and the videos in ``./data``):

   a. ``results_*_<s>_*/*.csv``: the partition folders the official ``download.py`` writes
      beside the metadata file it splits (``results_2M_train_4/0.csv`` ... ``3.csv``). The
      folder name tells the split (``_train_`` or ``_val_``). Files are read in numeric order
      (``2.csv`` before ``10.csv``; other names after the numbered ones, by name), which is the
      row order of the file they were split from. Preferred to that file: the same rows while
      every partition is there, and deleting the partitions whose videos were not downloaded
      is how to train on the downloaded part only.
   b. ``results_*_<s>.csv``: the metadata file itself (``results_2M_train.csv``,
      ``results_10M_val.csv``).

   Columns: at least ``videoid``, ``page_dir`` and ``name`` (the caption); ``contentUrl`` and
   ``duration`` are ignored. Videos: ``<data_root>/videos/<page_dir>/<videoid>.mp4``. One
   corpus per folder: a folder holding the metadata of several (``results_2M_train.csv`` and
   ``results_10M_train.csv``, or one file partitioned twice) is an error naming them, since
   reading them all would list a video twice where they overlap.

2. **The metadata mirror's layout**, under ``<data_root>/raw/<dataset_name>/data/<s>/``::

       partitions/*.csv   read in the same file order; at least the columns videoid, name
       videos/            train: <id[:2]>/<id[:4]>/<id[:6]>/<id>.mp4, validation: <id>.mp4

   The videos may instead sit in ``<data_root>/raw/videos/<train|validation>/`` (the seed
   project's tree, shared by the WebVid-style corpora of one root); the first of the two
   folders that exists is used.

No CSV in any of them is a ``FileNotFoundError`` whose one line lists each glob looked for. A
wrong header names the file and the columns found and expected; a row with an empty (or
path-like) ``videoid`` or ``page_dir``, or no ``name``, names the file and line. Files are read
lazily: a ``max_samples`` cap stops reading at the cap.

Videos that were never downloaded (a WebVid download is always partial): in the official layout
(1) the listing leaves their rows out and counts them once, as ``left_out: {missing: N}`` in the
run's log and ``final.json`` (and ``kvideo.validate``'s summary); they never reach a batch, so
they cost no slot and no skip budget, and a download holding any share of the rows trains. The
check lists each ``videos/<page_dir>/`` folder once (``DownloadedVideos``) rather than stat each
row's file (10M rows; a builder never stats its clips, see ``kvideo.data.datasets``). A split
whose videos are all missing (a wrong mount) lists no row, which stops the run in one line. In
the mirror layout (2) rows are not checked: a missing video there is the decoder's ``missing``
skip at each visit (``skipped`` in ``metrics.jsonl`` and ``final.json``, the file listed once
in ``skipped.jsonl``), under ``data.max_skip_fraction``.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kvideo.data.datasets.common import (
    WEBVID_SPLIT_DIR,
    absolute_root,
    check_split,
    iter_csv_records,
    take,
    webvid_video_relpath,
)
from kvideo.data.rows import ClipRow, ListedRows
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

logger = logging.getLogger(__name__)

# The seed project's shared video tree uses the split name itself.
SEED_VIDEO_SPLIT_DIR = {"train": "train", "validation": "validation"}
OFFICIAL_COLUMNS = ("videoid", "page_dir", "name")
MIRROR_COLUMNS = ("videoid", "name")


def official_partition_glob(split: str) -> str:
    """Layout 1a's partition folders of ``split``, relative to ``video.data_root``."""
    return f"results_*_{WEBVID_SPLIT_DIR[split]}_*"


def official_csv_glob(split: str) -> str:
    """Layout 1b's metadata files of ``split``, relative to ``video.data_root``."""
    return f"results_*_{WEBVID_SPLIT_DIR[split]}.csv"


def partitions_dir(data_root: str, dataset_name: str, split: str) -> str:
    """Layout 2's partition folder of ``split``."""
    return os.path.join(data_root, "raw", dataset_name, "data", WEBVID_SPLIT_DIR[split], "partitions")


def csv_files(folder: str) -> list[str]:
    """The ``*.csv`` files of ``folder`` in reading order: numbered names by number, then the
    rest by name (``0.csv, 2.csv, 10.csv, extra.csv``); ``[]`` when there is no such folder."""
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".csv")]
    except (FileNotFoundError, NotADirectoryError):
        return []

    def order(name: str) -> tuple[int, int, str]:
        stem = name[: -len(".csv")]
        return (0, int(stem), name) if stem.isdigit() else (1, 0, name)

    return [os.path.join(folder, name) for name in sorted(names, key=order)]


def official_metadata(root: str, split: str) -> list[str]:
    """Layout 1's CSVs of ``split`` under ``root``, in reading order; ``[]`` when it has none.

    Raises ``ValueError`` when ``root`` holds the metadata of more than one corpus.
    """
    try:
        entries = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    folders = [
        name
        for name in entries
        if fnmatch.fnmatchcase(name, official_partition_glob(split)) and csv_files(os.path.join(root, name))
    ]
    split_files = {name.rsplit("_", 1)[0] + ".csv" for name in folders}
    files = [
        name
        for name in entries
        if fnmatch.fnmatchcase(name, official_csv_glob(split))
        and name not in split_files
        and os.path.isfile(os.path.join(root, name))
    ]
    sources = [name + "/" for name in folders] + files
    if len(sources) > 1:
        raise ValueError(
            f"webvid: {root} holds the {split} metadata of several corpora ({', '.join(sources)}); "
            "keep one per video.data_root folder (reading them all lists a video twice where they overlap)"
        )
    if folders:
        return csv_files(os.path.join(root, folders[0]))
    return [os.path.join(root, name) for name in files]


def no_metadata_error(data_root: str, dataset_name: str, split: str) -> FileNotFoundError:
    """The one line for a ``video.data_root`` without a CSV in any layout: every glob looked for."""
    root = absolute_root(data_root)
    looked_for = [
        os.path.join(root, official_partition_glob(split), "*.csv"),
        os.path.join(root, official_csv_glob(split)),
        os.path.join(partitions_dir(root, dataset_name, split), "*.csv"),
    ]
    where = f"video.data_root={data_root!r}"
    if not os.path.isdir(root):
        where += " (not a folder)" if os.path.exists(root) else " (no such folder)"
    return FileNotFoundError(
        f"webvid: no {split} metadata CSV in {where}: looked for {', '.join(looked_for)}"
    )


def videos_dir(data_root: str, dataset_name: str, split: str) -> str:
    """Layout 2's folder holding this split's videos (see the module docstring for the order)."""
    own = os.path.join(data_root, "raw", dataset_name, "data", WEBVID_SPLIT_DIR[split], "videos")
    seed = os.path.join(data_root, "raw", "videos", SEED_VIDEO_SPLIT_DIR[split])
    for folder in (own, seed):
        if os.path.isdir(folder):
            return folder
    _warn_no_videos(split, own, seed)
    return own


def _warn_no_videos(split: str, *folders: str) -> None:
    # One cheap check of the folder, not of its files: a wrong data_root shows up at once.
    logger.warning(
        "webvid: no %s video folder at %s; every clip will be reported missing", split, " or ".join(folders)
    )


def read_webvid(data_root: str, dataset_name: str, split: str, max_samples: int = 0) -> ListedRows:
    """Rows of a WebVid-layout corpus (the reader behind ``webvid`` and ``sample``)."""
    check_split(split)
    root = absolute_root(data_root)
    official = official_metadata(root, split)
    if official:
        videos = os.path.join(root, "videos")
        if not os.path.isdir(videos):
            _warn_no_videos(split, videos)
        downloaded = DownloadedVideos(videos)
        left_out = {"missing": 0}
        rows = _iter_rows(
            official,
            OFFICIAL_COLUMNS,
            lambda row: os.path.join(videos, row["page_dir"], f"{row['videoid']}.mp4"),
        )
        kept = take(downloaded.present(rows, left_out), max_samples)
        return ListedRows(kept, {k: v for k, v in left_out.items() if v})
    mirror = csv_files(partitions_dir(root, dataset_name, split))
    if mirror:
        videos = videos_dir(root, dataset_name, split)
        rows = _iter_rows(
            mirror,
            MIRROR_COLUMNS,
            lambda row: os.path.join(videos, webvid_video_relpath(split, row["videoid"])),
        )
        return ListedRows(take(rows, max_samples))
    raise no_metadata_error(data_root, dataset_name, split)


class DownloadedVideos:
    """Which rows of the official layout have their video: one directory listing per
    ``videos/<page_dir>/`` (the last ``LISTED_FOLDERS`` kept), not a stat per row, which on a
    parallel file system costs a metadata round trip each (10M rows)."""

    LISTED_FOLDERS = 256  # the metadata CSVs are grouped by page_dir: one folder at a time

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._names = functools.lru_cache(maxsize=self.LISTED_FOLDERS)(self._list)

    def _list(self, page_dir: str) -> frozenset[str]:
        try:
            return frozenset(os.listdir(os.path.join(self.folder, page_dir)))
        except (FileNotFoundError, NotADirectoryError):
            return frozenset()

    def present(self, rows: Iterator[ClipRow], left_out: dict[str, int]) -> Iterator[ClipRow]:
        """``rows`` whose video file is there; the others counted in ``left_out["missing"]``."""
        for row in rows:
            page_dir, name = os.path.split(os.path.relpath(row.path, self.folder))
            if name in self._names(page_dir):
                yield row
            else:
                left_out["missing"] += 1


def _iter_rows(
    files: list[str], columns: tuple[str, ...], video_path: Callable[[Mapping[str, str]], str]
) -> Iterator[ClipRow]:
    """Rows of ``files``, lazily and in order; ``video_path`` maps a row's path fields
    (``columns`` but ``name``, checked by ``_path_part``) to its video."""
    for path in files:
        where, expected = f"webvid: {path}", f"at least {list(columns)}"
        for line, record in iter_csv_records(path, required=columns, where=where, expected=expected):
            parts = {key: _path_part(record, key, path, line) for key in columns if key != "name"}
            caption = record.get("name")
            if caption is None:
                raise ValueError(f"webvid: {path} line {line}: no name (caption) field")
            yield ClipRow(path=video_path(parts), caption=caption, clip_id=parts["videoid"])


def _path_part(record: Mapping[str, Any], key: str, path: str, line: int) -> str:
    """``record[key]`` as one component of a video path: not empty, not leaving its folder."""
    value = (record.get(key) or "").strip()
    if not value:
        raise ValueError(f"webvid: {path} line {line}: empty {key}")
    if "/" in value or "\\" in value or value.startswith("."):
        raise ValueError(f"webvid: {path} line {line}: invalid {key} {value!r}")
    return value


@DATASETS.register("webvid")
def build_webvid(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> ListedRows:
    """WebVid on disk under ``video.data_root``, in the layouts of the module docstring."""
    if not video.data_root:
        raise ValueError("video.data_root must be set for dataset_type=webvid")
    return read_webvid(video.data_root, video.dataset_name, split, max_samples)
