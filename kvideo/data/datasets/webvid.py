"""``webvid``: WebVid-10M (or any corpus in its layout) on disk.

Layout under ``<data_root>/raw/<dataset_name>/data/<train|val>/`` (the split folder is ``val``
for ``validation``), as in the public WebVid-10M metadata mirror::

    partitions/*.csv   read in sorted file-name order; at least the columns videoid, name
                       (the caption); others, such as contentUrl,duration,page_dir, are ignored
    videos/            train: <id[:2]>/<id[:4]>/<id[:6]>/<id>.mp4, validation: <id>.mp4

The videos may instead sit in ``<data_root>/raw/videos/<train|validation>/`` (the seed
project's tree, shared by the WebVid-style corpora of one root); the first of the two folders
that exists is used, and if neither does every clip is reported missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kvideo.data.datasets.common import (
    WEBVID_SPLIT_DIR,
    absolute_root,
    check_split,
    iter_csv_records,
    take,
    webvid_video_relpath,
)
from kvideo.data.rows import ClipRow
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

logger = logging.getLogger(__name__)

# The seed project's shared video tree uses the split name itself.
SEED_VIDEO_SPLIT_DIR = {"train": "train", "validation": "validation"}
REQUIRED_COLUMNS = ("videoid", "name")


def partitions_dir(data_root: str, dataset_name: str, split: str) -> str:
    return os.path.join(data_root, "raw", dataset_name, "data", WEBVID_SPLIT_DIR[split], "partitions")


def videos_dir(data_root: str, dataset_name: str, split: str) -> str:
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


def read_webvid(data_root: str, dataset_name: str, split: str, max_samples: int = 0) -> list[ClipRow]:
    """Rows of a WebVid-layout corpus (the reader behind ``webvid`` and ``sample``)."""
    check_split(split)
    root = absolute_root(data_root)
    partitions = partitions_dir(root, dataset_name, split)
    if not os.path.isdir(partitions):
        raise FileNotFoundError(
            f"webvid: partitions folder not found: {partitions} (expected "
            f"<video.data_root>/raw/<video.dataset_name>/data/{WEBVID_SPLIT_DIR[split]}/partitions/*.csv "
            f"with video.data_root={data_root!r}, video.dataset_name={dataset_name!r})"
        )
    files = sorted(name for name in os.listdir(partitions) if name.endswith(".csv"))
    if not files:
        raise FileNotFoundError(f"webvid: no *.csv partition files in {partitions}")
    videos = videos_dir(root, dataset_name, split)
    rows = _iter_rows([os.path.join(partitions, name) for name in files], videos, split)
    return take(rows, max_samples)


def _iter_rows(files: list[str], videos: str, split: str) -> Iterator[ClipRow]:
    for path in files:
        where, expected = f"webvid: {path}", f"at least {list(REQUIRED_COLUMNS)}"
        records = iter_csv_records(path, required=REQUIRED_COLUMNS, where=where, expected=expected)
        for line, record in records:
            videoid = (record.get("videoid") or "").strip()
            caption = record.get("name")
            if not videoid or caption is None:
                raise ValueError(f"webvid: {path} line {line}: empty videoid or missing name field")
            if "/" in videoid or "\\" in videoid or videoid.startswith("."):
                raise ValueError(f"webvid: {path} line {line}: invalid videoid {videoid!r}")
            yield ClipRow(
                path=os.path.join(videos, webvid_video_relpath(split, videoid)),
                caption=caption,
                clip_id=videoid,
            )


@DATASETS.register("webvid")
def build_webvid(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]:
    """WebVid-10M on-disk layout under ``video.data_root`` (see the module docstring)."""
    if not video.data_root:
        raise ValueError("video.data_root must be set for dataset_type=webvid")
    return read_webvid(video.data_root, video.dataset_name, split, max_samples)
