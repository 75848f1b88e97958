"""Read an offline W&B run back from its ``run-<id>.wandb`` file.

The file is wandb's transaction log: the LevelDB log format (32 KiB blocks of records with a
7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST) after a 7-byte file header, each
record a ``Any``. wandb no longer ships a Python reader for it (its
``wandb-core`` binary does the syncing), so the tests carry these lines.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # wandb is optional: imported when a log is read
    pass

_FILE_HEADER = b":W&B\xe1\xbe\x00"  # ident, magic 0xBEE1 (little-endian), version 0
_BLOCK = 32 * 1024
_RECORD_HEADER = struct.Struct("<IHB")  # crc32, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[: len(_FILE_HEADER)] == _FILE_HEADER, f"{path} is not a W&B transaction log"
    records, pos, pending = [], len(_FILE_HEADER), b""
    while pos + _RECORD_HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _RECORD_HEADER.size:  # the block's tail is padding
            pos += room
            continue
        _crc, length, kind = _RECORD_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero-filled rest of a block
            pos += room
            continue
        start = pos + _RECORD_HEADER.size
        if start + length > len(data):  # the tail wandb-core is still writing
            break
        pending += data[start : start + length]
        pos = start + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_finished_run(path: Path, timeout_s: float = 20.0) -> list[Any]:
    """The records of a finished run, once its ``exit`` record is on disk: ``run.finish()`` can
    return before wandb-core has flushed the log (measured: 1 in 8 finishes left only the file
    header for a moment), so a reader right after it may see a partial file, or a record caught
    half-written."""
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # no stubs installed

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            records = read_records(path)
        except DecodeError:  # a record caught half-written (seen once in CI): read again
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def history(records: list[Any]) -> list[dict[str, Any]]:
    """Every ``run.log`` row, user keys only (wandb's own start with ``_``), plus ``_step``."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            rows.append({k: v for k, v in row.items() if not k.startswith("_") or k == "_step"})
    return rows


def config(records: list[Any]) -> dict[str, Any]:
    """The run's config: what ``wandb.init`` and every ``config.update`` set, merged."""
    merged: dict[str, Any] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        updates = (
            record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        )
        merged.update({_key(i): json.loads(i.value_json) for i in updates})
    return merged


def summary(records: list[Any]) -> dict[str, Any]:
    """The run summary: the last value each key was given."""
    merged: dict[str, Any] = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            merged.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return merged


def run_info(records: list[Any]) -> Any:
    """The ``RunRecord`` (id, project, display name) the log starts with."""
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")
