"""Files that are written whole or not at all, and append-only JSONL files read back whole.

A reader (a resumed run, the sweep report, a person with ``cat``) must never see half a file
because the writer was killed or the disk filled: write a temporary file beside the target,
then ``os.replace`` it, which is atomic within one filesystem. Checkpoints add an fsync of
the file and the directory on top (``kvideo.train.checkpoint``); these small text files do
not need that durability.

Append-only logs (``metrics.jsonl``, ``skipped.jsonl``) cannot be replaced on every line; a kill
mid-append leaves a torn last line, which ``read_jsonl`` skips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line ends) in one step; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file, skipping a torn last line (a run killed mid-write); ``[]`` when
    the file does not exist."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
