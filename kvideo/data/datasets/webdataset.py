"""``webdataset``: tar shards as video2dataset writes them, streamed with exact resume.

**Where.** ``video.data_root`` is one of

* a folder with ``train/`` and ``validation/`` (or ``val/``) subfolders of ``*.tar`` shards;
* a folder of ``*.tar`` shards itself (video2dataset's output folder): the train split;
* a shard path or a brace pattern of shard paths, ``/data/shards/{00000..00099}.tar`` (expanded
  by ``braceexpand``, the package webdataset uses for its URLs): the train split. Every path it
  expands to must exist. Hydra's override grammar reserves braces, so on the command line the
  value is quoted: ``"video.data_root='/data/shards/{00000..00099}.tar'"``.

Each may also be a URL in object storage, ``s3://bucket/shards`` or
``s3://bucket/shards/{00000..00099}.tar`` (``gs://``, ``https://`` alike; ``kvideo.data.remote``):
headers and members are then read by byte range, never by downloading a shard.

Shards are read in file-name (or pattern) order. A split with none is an error that says what
was looked for; the validation split of a root that has only train shards (a pattern, a flat
folder) reads those, with a warning, as ``manifest`` does for a single manifest file.

**What.** An uncompressed tar. A *sample* is a run of consecutive members with the same key,
the member's path up to the first dot of its file name, and the rest is its extension
(webdataset's rule; extensions compared in lower case): ``000123.mp4``, ``000123.txt``,
``000123.json``. The video is the sample's first ``.mp4``, ``.webm``, ``.mkv``, ``.avi`` or
``.mov`` member, or its picture (``.jpg``, ``.png``, ``.webp``, ...: a one-frame clip, as image-text
shards hold); the caption its ``.txt`` (UTF-8, surrounding whitespace stripped), else the
``caption`` string of its ``.json`` metadata (video2dataset writes it there too); any other
member is not read. A row's ``path`` is
``<shard>#<video member>`` (what ``skipped.jsonl`` and ``kvideo.validate``'s blocklist name),
its ``clip_id`` the key.

**Bad input.**

* A shard that is not a tar: ``ValueError`` naming the file (listing stops, as for a bad row of
  a manifest).
* A sample without a video member is counted as ``missing``, one without a caption (or with an
  empty one) as ``no_caption``; a corrupt video gets the decoder's reason, as a file of its own
  would. They are counted when their turn comes, per reason, like every skipped clip, while the
  rest of the shard trains (``data.bad_sample_policy=replace`` fills their slots).
* A sample holding two members of one name (``a.mp4`` twice) is counted as
  ``duplicate_member``, with a warning at listing: which copy is meant is unknown (tar extracts
  the last, the webdataset package refuses the shard).
* A shard rewritten after listing (its size, mtime or inode differ when a sample is read) has
  other bytes at the listed offsets: its samples are counted as ``shard_changed``, never decoded
  as their neighbours' videos. A new run lists it again.
* A truncated or damaged tar keeps what precedes the break: listing stops at the first member
  whose data runs past the end of the file or at a header that does not parse, with a warning;
  a sample cut there keeps the members it has (a video without its caption is ``no_caption``).

**How it is read.** Listing reads the tar headers only (``tarfile`` seeks over member data) and
the captions (the tokenizer needs them up front), once per shard version: the listing is cached
(``kvideo.data.datasets.listing_cache``, ``data.listing_cache``), and ranks starting together
list different shards first and read each other's. Training reads each video's bytes by offset
and decodes them from memory (``kvideo.data.rows.video_source``), no temporary file.

**Order, epochs, ranks and resume** (``kvideo.data.sharding``, ``stream_order``). An epoch is
one pass over every sample of the split's shards. Its order is a function of (seed, epoch)
alone: the shards in a seeded permutation, each in file order, through a shuffle buffer of
``data.shuffle_buffer`` samples (default 1000) seeded the same way. Rank ``r`` of ``W`` takes
the ``r``-th of ``W`` contiguous pieces of ``floor(N / W)`` samples, so the ranks share the shards
and take the same number of steps however unequal the shards are; at most ``W - 1`` samples sit
out a training epoch, which ones changing with the epoch. Validation (unshuffled) reads the
files' order, every ``W``-th sample per rank, wrapped to a multiple of ``W`` as for map-style
data (the evaluator leaves the wrapped duplicates out). DataLoader
workers read the rank's samples batch by batch, as for map-style data, so the batches do not
depend on the worker count, a run resumed at (epoch, samples consumed) yields exactly the
batches of an uninterrupted one, and the watchdog, blocklist and bad-sample policy work
unchanged.

**Why not the webdataset package.** Its pipeline splits the shards across DataLoader workers
and interleaves what they yield, so batches change with the worker count; resuming in the
middle of an epoch means re-reading the stream from its start (or giving up exactness); and
replacing a hung worker (``kvideo.data.watchdog``) would lose or repeat samples. An index of the
shards makes every sample addressable, and the stdlib's ``tarfile`` is all the tar parsing it
needs. What that costs: shards must be seekable (a file, or an object read by byte range), not a
``pipe:`` stream, and the first listing of a shard reads every header and caption.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kvideo.data.datasets.common import take
from kvideo.data.datasets.listing_cache import cached_listing
from kvideo.data.datasets.shard_locations import SHARD_SUFFIX, shard_files
from kvideo.data.remote import LISTING_BLOCK, filesystem, is_url
from kvideo.data.rows import ClipRow, Stamp
from kvideo.decode.image import IMAGE_SUFFIXES
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")
# A sample whose visual is a picture (image-text shards such as LAION's): a one-frame clip.
IMAGE_EXTENSIONS = tuple(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
VISUAL_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
CAPTION_EXTENSION = "txt"
# video2dataset writes the caption into <key>.json as well; it is read when there is no .txt.
METADATA_EXTENSION = "json"
TEXT_EXTENSIONS = (CAPTION_EXTENSION, METADATA_EXTENSION)
EXPECTED = (
    "expected an uncompressed tar of <key>.mp4 + <key>.txt (+ <key>.json) members, as video2dataset writes"
)
# webdataset's base_plus_ext, verbatim: the key is the path up to the first dot of the file name.
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def split_key(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a member name, extension in lower case; ``None`` for a name
    without one (webdataset skips those too)."""
    match = _KEY_AND_EXTENSION.match(name)
    if match is None:
        return None
    key, extension = match.groups()
    return key, extension.lower()


# ----------------------------------------------------------------------------- what


# What is read of a caption member: captions are cut to model.max_text_len tokens anyway.
MAX_CAPTION_BYTES = 64 << 10


def _open(shard: str) -> tarfile.TarFile:
    """The shard as a tar read member by member: a local file, or an object read by byte range
    (``kvideo.data.remote``)."""
    try:
        if is_url(shard):
            fs, path = filesystem(shard)
            handle = fs.open(path, "rb", block_size=LISTING_BLOCK, cache_type="readahead")
            return tarfile.open(fileobj=handle, mode="r:")
        return tarfile.open(shard, mode="r:")
    except tarfile.ReadError as e:
        raise ValueError(f"webdataset shard {shard} is not a tar archive ({e}); {EXPECTED}") from None
    except IsADirectoryError:
        raise ValueError(f"webdataset shard {shard} is a directory; {EXPECTED}") from None


def _members(shard: str, size: int, warnings: list[str]) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """The shard's regular-file members in file order, each with its data when it may hold the
    caption (``.txt``, ``.json``; ``None`` otherwise); stops at a truncation or damage (module
    docstring), adding a warning to ``warnings``."""
    with _open(shard) as tar:
        while True:
            try:
                info = tar.next()
            except tarfile.ReadError as e:
                warnings.append(_break(shard, tar.offset, str(e)))
                return
            if info is None:
                if not _ends_cleanly(tar, size):
                    warnings.append(_break(shard, tar.offset, "a header that does not parse or is cut"))
                return
            if not info.isreg():
                continue
            if info.offset_data + info.size > size:
                warnings.append(
                    _break(shard, info.offset, f"member {info.name} runs past the end of the file")
                )
                return
            parts = split_key(info.name)
            handle = tar.extractfile(info) if parts is not None and parts[1] in TEXT_EXTENSIONS else None
            # bounded: a 200 MiB caption member would otherwise be read whole (and decoded) for
            # a caption the tokenizer cuts to tens of tokens
            yield info, (handle.read(MAX_CAPTION_BYTES) if handle is not None else None)


def _ends_cleanly(tar: tarfile.TarFile, size: int) -> bool:
    """Whether listing ended at the end-of-archive marker (a zero block), not at garbage or a cut."""
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    return tar.offset < size and block == tarfile.NUL * len(block) and len(block) == tarfile.BLOCKSIZE


def _break(shard: str, offset: int, why: str) -> str:
    return (
        f"webdataset: shard {shard} is truncated or damaged at byte {offset} ({why}): "
        "keeping the members before it"
    )


def list_shard(shard: str, stamp: Stamp) -> tuple[list[ClipRow], list[str]]:
    """``(rows, warnings)``: one row per sample of ``shard``, in file order (rules in the module
    docstring), and what its listing has to say (a truncation, a duplicate member)."""
    warnings: list[str] = []
    rows: list[ClipRow] = []
    key: str | None = None
    fields: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    duplicate = ""
    for info, data in _members(shard, int(stamp[0]), warnings):
        parts = split_key(info.name)
        if parts is None:
            continue
        if parts[0] != key:
            if key is not None:
                rows.append(_row(shard, stamp, key, fields, duplicate, warnings))
            key, fields, duplicate = parts[0], {}, ""
        if parts[1] in fields:
            duplicate = duplicate or info.name
        fields.setdefault(parts[1], (info, data))
    if key is not None:
        rows.append(_row(shard, stamp, key, fields, duplicate, warnings))
    return rows, warnings


def _caption(fields: dict[str, tuple[tarfile.TarInfo, bytes | None]]) -> str:
    """The ``.txt`` member's text, else the ``caption`` string of the ``.json`` member."""
    text = fields.get(CAPTION_EXTENSION, (None, None))[1]
    if text is not None:
        return text.decode("utf-8", errors="replace").strip()
    metadata = fields.get(METADATA_EXTENSION, (None, None))[1]
    try:
        caption = json.loads(metadata) if metadata is not None else None
    except (ValueError, RecursionError):  # not JSON, or cut at MAX_CAPTION_BYTES
        return ""
    caption = caption.get("caption") if isinstance(caption, dict) else None
    return caption.strip() if isinstance(caption, str) else ""


def _row(
    shard: str,
    stamp: Stamp,
    key: str,
    fields: dict[str, tuple[tarfile.TarInfo, bytes | None]],
    duplicate: str,
    warnings: list[str],
) -> ClipRow:
    video = next((fields[ext][0] for ext in fields if ext in VISUAL_EXTENSIONS), None)
    caption = _caption(fields)
    if video is None:
        path = f"{shard}#{key}"
        return ClipRow(path=path, caption=caption, clip_id=key, shard=shard, skip_reason="missing")
    if duplicate:  # which copy is meant? tar says the last, webdataset refuses the shard
        warnings.append(f"webdataset: shard {shard} holds {duplicate} twice: sample {key} is skipped")
    reason = "duplicate_member" if duplicate else "" if caption else "no_caption"
    return ClipRow(
        path=f"{shard}#{video.name}",
        caption=caption,
        clip_id=key,
        shard=shard,
        shard_stamp=stamp,
        offset=video.offset_data,
        size=video.size,
        skip_reason=reason,
    )


def _rows_of(shard: str, stamp: Stamp, cache: bool) -> list[ClipRow]:
    """The shard's rows: from the listing cache (``listing_cache``), or listed now."""
    if cache:
        return cached_listing(shard, stamp, lambda: list_shard(shard, stamp))
    rows, warnings = list_shard(shard, stamp)
    for warning in warnings:
        logger.warning(warning)
    return rows


def _iter_rows(shards: list[tuple[str, Stamp]], *, cache: bool, whole: bool) -> Iterator[ClipRow]:
    """Every shard's rows in order. On rank ``r`` of ``W`` (``RANK`` / ``WORLD_SIZE``), with the
    cache and the ``whole`` split to read, shards ``r, r + W, ...`` are listed first, so that the
    ranks starting together share the cold listing, and each then reads the others' entries."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    mine: dict[int, list[ClipRow]] = {}
    if cache and whole and world > 1:
        mine = {k: _rows_of(*shards[k], cache) for k in range(rank % world, len(shards), world)}
    for k, (shard, stamp) in enumerate(shards):
        yield from mine.pop(k) if k in mine else _rows_of(shard, stamp, cache)


@DATASETS.register("webdataset")
def build_webdataset(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]:
    """video2dataset tar shards under ``video.data_root`` (see the module docstring)."""
    if not video.data_root:
        raise ValueError(
            "video.data_root must be set for dataset_type=webdataset (a folder with train/ and "
            f"validation/ *{SHARD_SUFFIX} shards, or a brace pattern such as "
            f"/data/shards/{{00000..00099}}{SHARD_SUFFIX})"
        )
    shards = shard_files(video.data_root, split)
    rows = take(_iter_rows(shards, cache=data.listing_cache, whole=max_samples == 0), max_samples)
    logger.info("webdataset: %d %s samples from %d shard(s)", len(rows), split, len(shards))
    return rows
