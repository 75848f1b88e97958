"""The blocklist ``kvideo.validate`` writes and ``data.blocklist`` reads, in one place.

JSON lines: a ``#`` header, then one ``{"path": ..., "reason": ...}`` per bad file, sorted by
path. JSON rather than one path per line, because a file name may end in a space or hold a
newline: a line-based list loses both (the reader strips lines, a newline splits one name in
two), opening the bad file and masking an innocent one. Files of older versions (one path per
line) are still read as they always were.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kvideo.files import write_text_atomic

BLOCKLIST_NAME = "blocklist.txt"


def write_blocklist(path: Path, bad: Iterable[tuple[str, str]]) -> Path:
    """Write ``(path, reason)`` pairs to ``path``, whole or not at all (``kvideo.files``)."""
    # The header stays one line whatever the folder's name holds; json.dumps (ASCII) escapes
    # every newline, control character and non-UTF-8 byte (surrogateescape) of the paths.
    where = str(path.resolve()).replace("\r", "\\r").replace("\n", "\\n")
    header = f"# kvideo.validate blocklist, JSON lines: train with data.blocklist={where}\n"
    lines = "".join(json.dumps({"path": p, "reason": reason}) + "\n" for p, reason in sorted(bad))
    return write_text_atomic(path, header + lines)


def read_blocklist(path: str) -> frozenset[str]:
    """Paths to skip, from the file ``kvideo.validate`` writes (``data.blocklist``).

    Two formats, told apart by the first line that is neither blank nor a ``#`` comment:

    * JSON lines (what ``write_blocklist`` writes): each line a JSON string or an object with a
      ``"path"``. Lossless: a name ending in a space, holding a newline or starting with ``#``
      comes back exactly, which one path per line cannot do.
    * one path per line (older versions, hand-written lists): lines are stripped and ``#``
      lines skipped, as they always were, so existing blocklists keep working.

    JSON lines are split on ``\n`` only (``str.splitlines`` also breaks at form feeds and
    U+2028). The file is decoded as UTF-8 with ``surrogateescape``, so in an old file too a
    name that is not valid UTF-8 reads back as the ``str`` Python gives for it on disk.
    """
    if not path:
        return frozenset()
    file = Path(path)
    expected = f"expected a file (the {BLOCKLIST_NAME} that kvideo.validate writes in its --out folder)"
    if file.is_dir():
        inside = file / BLOCKLIST_NAME
        hint = f"; did you mean data.blocklist={inside}?" if inside.is_file() else ""
        raise IsADirectoryError(f"data.blocklist={path!r} is a directory; {expected}{hint}")
    if not file.exists():
        raise FileNotFoundError(f"data.blocklist={path!r}: no such file ({expected})")
    if not file.is_file():
        raise ValueError(f"data.blocklist={path!r} is not a regular file; {expected}")
    text = file.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    lines = text.split("\n")
    content = [(n, line) for n, line in enumerate(lines, start=1) if line.strip() and not _is_comment(line)]
    if not content or _json_entry(content[0][1]) is None:
        # One path per line: read exactly as before the JSON lines format.
        stripped = (line.strip() for line in text.splitlines())
        return frozenset(line for line in stripped if line and not line.startswith("#"))
    paths = set()
    for n, line in content:
        entry = _json_entry(line)
        if isinstance(entry, dict):
            entry = entry.get("path")
        if not isinstance(entry, str):
            raise ValueError(
                f'data.blocklist={path!r} line {n}: expected a JSON string or {{"path": ...}} object, '
                f"as on the lines above (got {line.strip()[:100]!r})"
            )
        paths.add(entry)
    return frozenset(paths)


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _json_entry(line: str) -> str | dict[str, Any] | None:
    """The JSON string or object on a line, or None when it holds neither (a plain path)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, (str, dict)) else None
