"""``manifest``: your own list of clips, one JSON object or CSV row per clip.

``video.data_root`` is either a manifest *file* (``.jsonl`` or ``.csv``), read for whichever
split is asked (validation then reads the training clips: use a folder for a held-out set), or a
*folder* holding ``<split>.jsonl`` or ``<split>.csv`` (``train.*``; ``validation.*`` or ``val.*``).

Keys/columns: ``path`` and ``caption``; optional ``start``/``end`` (seconds; empty or null =
none) and ``id`` (default ``<manifest file name>:<line>``). Relative paths are relative to the
manifest file's folder. A bad row raises ``ValueError`` naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kvideo.data.datasets.common import (
    check_split,
    iter_csv_records,
    iter_jsonl_records,
    resolve_against,
    resolve_split_file,
    segment_fields,
    take,
)
from kvideo.data.rows import ClipRow
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

MANIFEST_SUFFIXES = (".jsonl", ".csv")


def read_manifest(manifest: str, max_samples: int = 0) -> list[ClipRow]:
    """Rows of one JSONL or CSV manifest file, reading no further than the cap."""
    manifest = os.path.abspath(manifest)
    where = f"manifest {manifest}"
    if manifest.endswith(".jsonl"):
        records = iter_jsonl_records(manifest, where=where)
    else:
        records = _non_empty_cells(
            iter_csv_records(
                manifest,
                required=("path", "caption"),
                where=where,
                expected="path, caption and optionally start, end, id",
            )
        )
    base = os.path.dirname(manifest)
    rows = (_manifest_row(manifest, base, line, record) for line, record in records)
    return take(rows, max_samples)


def _non_empty_cells(records: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
    # Empty CSV cells mean "not given", like a missing/null JSON key.
    for line, record in records:
        yield line, {key: value for key, value in record.items() if value not in ("", None)}


def _manifest_row(manifest: str, base: str, line: int, record: dict[str, Any]) -> ClipRow:
    where = f"manifest {manifest} line {line}"
    for key in ("path", "caption"):
        if key not in record or record[key] is None:
            raise ValueError(f"{where}: missing required key {key!r}")
        if not isinstance(record[key], str):
            raise ValueError(f"{where}: {key!r} must be a string (got {record[key]!r})")
    if not record["path"].strip():
        raise ValueError(f"{where}: empty 'path'")
    start, end = segment_fields(record, where)
    clip_id = record.get("id")
    return ClipRow(
        path=resolve_against(base, record["path"]),
        caption=record["caption"],
        start=start,
        end=end,
        clip_id=str(clip_id) if clip_id is not None else f"{os.path.basename(manifest)}:{line}",
    )


@DATASETS.register("manifest")
def build_manifest(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]:
    """A JSONL/CSV manifest file, or a folder of per-split manifests, at ``video.data_root``."""
    check_split(split)
    if not video.data_root:
        raise ValueError(
            "video.data_root must be set for dataset_type=manifest "
            "(a .jsonl/.csv manifest file, or a folder holding train.jsonl / validation.jsonl)"
        )
    manifest = resolve_split_file(video.data_root, split, MANIFEST_SUFFIXES, kind="manifest")
    return read_manifest(manifest, max_samples)
