"""What several dataset builders share: splits, the row cap, record readers, path rules.

One place for each rule so the builders cannot drift apart:

* record readers (``iter_csv_records``, ``iter_jsonl_records``) tolerate a UTF-8 BOM, which
  spreadsheet and Windows tools put before the first line (``json.loads`` refuses a leading
  U+FEFF, and a BOM-prefixed CSV header would hide its first column), and yield
  ``(line number, record)`` lazily, so a cap stops reading the file;
* ``segment_fields`` reads a record's optional ``start`` / ``end`` seconds;
* ``absolute_root`` / ``resolve_against`` turn configured roots and relative row paths into the
  absolute paths a ``ClipRow`` carries;
* the WebVid layout's split folder names and video-path nesting, used by the ``webvid`` reader
  and by the sample corpus generator, which writes that layout.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

from kvideo.data.datasets.text_errors import allow_long_csv_fields, record_file_errors
from kvideo.data.rows import ClipRow

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
# WebVid names the validation metadata/video folder "val".
WEBVID_SPLIT_DIR = {"train": "train", "validation": "val"}


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (got {split!r})")


def take(rows: Iterator[ClipRow], max_samples: int) -> list[ClipRow]:
    """Materialise at most ``max_samples`` rows (0 = all) without reading further."""
    if max_samples < 0:
        raise ValueError(f"max_samples must be non-negative (got {max_samples})")
    return list(itertools.islice(rows, max_samples) if max_samples else rows)


def absolute_root(path: str) -> str:
    """A configured root (``video.data_root``, ``$KVIDEO_CACHE``) as an absolute path, ``~`` expanded."""
    return os.path.abspath(os.path.expanduser(path))


def resolve_split_file(data_root: str, split: str, suffixes: Sequence[str], *, kind: str) -> str:
    """The file to read for ``split`` when ``video.data_root`` is one file (read for every split,
    with a warning for validation: it is not held out) or a folder of ``<split><suffix>`` files
    (``val`` also names validation). ``kind`` names the files in errors and the warning
    (``manifest``, ``conversations``)."""
    path = absolute_root(data_root)
    if os.path.isfile(path):
        if not path.endswith(tuple(suffixes)):
            raise ValueError(f"video.data_root={data_root!r}: a {kind} file must be {' or '.join(suffixes)}")
        if split == "validation":
            logger.warning(
                "%s: validation reads the training file %s (point video.data_root at a folder with "
                "train.* and validation.* for a held-out set)",
                kind,
                path,
            )
        return path
    if os.path.isdir(path):
        stems = (split, "val") if split == "validation" else (split,)
        candidates = [os.path.join(path, stem + suffix) for stem in stems for suffix in suffixes]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate
        raise FileNotFoundError(
            f"video.data_root={data_root!r} is a folder without a {split} {kind} file "
            f"(looked for {', '.join(os.path.basename(c) for c in candidates)})"
        )
    raise FileNotFoundError(f"video.data_root={data_root!r}: no such {kind} file or folder")


def resolve_against(base: str, path: str) -> str:
    """``path`` as written in a manifest row: absolute as is, else relative to ``base``."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def segment_fields(record: dict[str, Any], where: str) -> tuple[float | None, float | None]:
    """A record's optional ``start`` / ``end`` seconds (missing or null = none), checked:
    ``0 <= start < end``, ``end > 0``. ``where`` names the record in errors."""
    start = _seconds(record.get("start"), "start", where)
    end = _seconds(record.get("end"), "end", where)
    if start is not None and start < 0:
        raise ValueError(f"{where}: start must be >= 0 (got {start})")
    if start is not None and end is not None and start >= end:
        raise ValueError(f"{where}: start ({start}) must be < end ({end})")
    if end is not None and end <= 0:
        raise ValueError(f"{where}: end must be > 0 (got {end})")
    return start, end


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


def iter_csv_records(
    path: str, *, required: Sequence[str], where: str, expected: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of a CSV file with a header holding at least ``required``.

    ``where`` names the file in errors (``"manifest /x.csv"``), ``expected`` says which columns
    a good header has. A short row's missing cells are ``None``.
    """
    allow_long_csv_fields()
    with open(path, newline="", encoding="utf-8-sig") as handle, record_file_errors(path, where):
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [col for col in required if col not in columns]
        if missing:
            raise ValueError(f"{where} lacks column(s) {missing}: found {list(columns)}, expected {expected}")
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as err:  # a field over CSV_FIELD_LIMIT, a NUL byte
                raise ValueError(f"{where} line {reader.reader.line_num}: {err}") from None
            yield reader.line_num, record


def iter_jsonl_records(path: str, *, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, object)`` of each non-blank line of a JSON-lines file; other values are errors."""
    with open(path, encoding="utf-8-sig") as handle, record_file_errors(path, where):
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where} line {line_no}: invalid JSON ({err.msg})") from None
            except RecursionError:
                raise ValueError(f"{where} line {line_no}: JSON nested too deeply to read") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where} line {line_no}: expected a JSON object")
            yield line_no, record


def webvid_video_relpath(split: str, videoid: str) -> str:
    """A clip's path inside its split's video folder: train videos are nested by id prefix
    (``<id[:2]>/<id[:4]>/<id[:6]>/<id>.mp4``, WebVid-10M's layout), validation ones flat."""
    if split == "train":
        return os.path.join(videoid[:2], videoid[:4], videoid[:6], f"{videoid}.mp4")
    return f"{videoid}.mp4"
