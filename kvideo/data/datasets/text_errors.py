"""Record files that Python's readers refuse without naming a file or a line.

Each failure below ended a run with a bare message (or a traceback) that named neither:

* text that is not UTF-8: a spreadsheet's UTF-16 export or a Latin-1 file raises
  ``UnicodeDecodeError`` at an offset into some read buffer;
* JSON nested deeper than the parser's recursion limit (a 200,000-deep array): ``RecursionError``;
* a CSV field over the csv module's 128 KiB default (one long WebVid caption refused the whole
  corpus with ``field larger than field limit``).

``record_file_errors`` turns them into the one line the record readers give for every other bad
record: the file, the line, what was expected.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

# A caption or record field of up to 16 MiB is read (captions are cut to tokens later); the
# csv module's default of 128 KiB refused real WebVid rows. Past this, one line names the row.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def allow_long_csv_fields() -> None:
    """Raise the csv module's (process-wide) field limit to ``CSV_FIELD_LIMIT``, never lower it."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))


@contextmanager
def record_file_errors(path: str, where: str) -> Iterator[None]:
    """Re-raise a non-UTF-8 file, a too-deep JSON value or a CSV error as one ``ValueError``
    that starts with ``where`` (``"manifest /x.jsonl"``). ``RecursionError`` from a record
    reader that knows its line is better caught there; this names the file at least."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise ValueError(not_utf8_message(path, where, err)) from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read") from None
    except csv.Error as err:
        raise ValueError(f"{where}: {err}") from None


def not_utf8_message(path: str, where: str, err: UnicodeDecodeError) -> str:
    """``where`` is UTF-16 (by its byte-order mark), or the line of the first byte that is not
    UTF-8; either way, what to do."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            if head in _UTF16_BOMS:
                return f"{where} is UTF-16 text: kvideo reads UTF-8 (save the file as UTF-8)"
            handle.seek(0)
            line = _line_of_first_bad_byte(handle)
    except OSError:
        line = None
    place = f" line {line}" if line is not None else ""
    bad = err.object[err.start : err.start + 1]
    return f"{where}{place}: not UTF-8 text (byte 0x{bad.hex()}): save the file as UTF-8"


def _line_of_first_bad_byte(handle: BinaryIO) -> int | None:
    """The 1-based line holding the file's first byte that is not UTF-8, read in 1 MiB chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    while chunk := handle.read(1 << 20):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as err:
            return lines + chunk.count(b"\n", 0, max(err.start, 0))
        lines += chunk.count(b"\n")
    return None
