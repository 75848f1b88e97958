"""Markdown tables: the sweep report, the TensorBoard text panels and the benchmark summary.

Every cell is one line with ``|`` escaped, so a free-text cell (a generated caption, an error)
cannot break its table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value: object) -> str:
    """``value`` as one table cell: whitespace collapsed, ``|`` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], *, aligned: bool = False) -> str:
    """A Markdown table of ``rows`` under ``header``. ``aligned`` pads the columns to one width,
    for a table read in a terminal as well as rendered."""
    body = [[cell(v) for v in row] for row in rows]
    head = [cell(h) for h in header]
    if not aligned:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in body]
    return "\n".join(lines)
