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
    """Records of a JSONL file; ``[]`` when the file does not exist.

    The last line may be torn (a run killed mid-write) and is then left out; a bad line anywhere
    else is damage, not a torn write, and raises ``ValueError`` naming the file and the line.
    """
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == last:
                continue
            raise ValueError(f"{path}:{number + 1}: not a JSON record ({e.msg})") from None
    return records
