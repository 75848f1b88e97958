"""Files that are written whole or not at all.

A reader (a resumed run, the sweep report, a person with ``cat``) must never see half a file
because the writer was killed or the disk filled: write a temporary file beside the target,
then ``os.replace`` it, which is atomic within one filesystem. Checkpoints add an fsync of
the file and the directory on top (``kvideo.train.checkpoint``); these small text files do
not need that durability.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line ends) in one step; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path
