"""A shard's listing, computed once: the rows ``read_shard`` finds in it, kept on disk under the
shard's name and ``Stamp`` (size and mtime/inode, or size and ETag).

Listing reads every tar header and caption of a shard; a corpus of 1,000 shards lists for tens of
seconds, on every rank of every run. The cache turns a second listing into reading one small JSON
file per shard (``benchmarks/listing.py`` measures both). A rewritten shard has another stamp, so
its old entry is never read; the warnings its listing gave (a truncated tar) are kept with it and
said again.

Entries live in ``$KVIDEO_CACHE/listings`` (``~/.cache/kvideo/listings`` without it), one file per
shard, written to a temporary name and renamed into place, so ranks and runs that list the same
shard at once never read half an entry. ``data.listing_cache=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from kvideo.data.rows import ClipRow, Stamp

logger = logging.getLogger("kvideo.data.datasets.webdataset")

# Bumped whenever what a listing holds or how it is read changes: older entries are then unused.
FORMAT = 1
ROW_FIELDS = ("path", "caption", "clip_id", "offset", "size", "skip_reason")


def listing_dir() -> Path:
    """Where entries live: ``$KVIDEO_CACHE/listings``, else ``~/.cache/kvideo/listings``."""
    root = os.environ.get("KVIDEO_CACHE") or "~/.cache/kvideo"
    return Path(root).expanduser().absolute() / "listings"


def entry_path(shard: str, stamp: Stamp) -> Path:
    key = hashlib.sha256(json.dumps([FORMAT, shard, list(stamp)]).encode()).hexdigest()
    return listing_dir() / key[:2] / f"{key}.json"


def cached_listing(
    shard: str, stamp: Stamp, listing: Callable[[], tuple[list[ClipRow], list[str]]]
) -> list[ClipRow]:
    """The shard's rows from its entry, or from ``listing()`` (``(rows, warnings)``), which is then
    kept. An entry that cannot be read or written is listed again and said once."""
    path = entry_path(shard, stamp)
    try:
        with open(path, encoding="utf-8") as handle:
            entry = json.load(handle)
        for warning in entry["warnings"]:
            logger.warning(warning)
        return [
            ClipRow(**dict(zip(ROW_FIELDS, row, strict=True)), shard=shard, shard_stamp=stamp)
            for row in entry["rows"]
        ]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning(
            "webdataset: listing cache entry %s of %s is unreadable (%s): listing the shard again",
            path,
            shard,
            e,
        )
    rows, warnings = listing()
    for warning in warnings:
        logger.warning(warning)
    _write(
        path,
        {
            "shard": shard,
            "rows": [[getattr(row, f) for f in ROW_FIELDS] for row in rows],
            "warnings": warnings,
        },
    )
    return rows


def _write(path: Path, entry: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entry, handle, ensure_ascii=False, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("webdataset: cannot keep the listing of %s in %s (%s)", entry["shard"], path.parent, e)
