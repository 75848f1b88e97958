"""transformers' load report, kept for the one line a failed load needs.

``from_pretrained`` logs a table of the weights it could not load as they are ("LOAD REPORT":
``MISMATCH`` rows for a weight whose shape differs from what ``config.json`` builds) and then
raises ``RuntimeError("... For details look at the above report!")``. kvideo loads quietly
(``quiet_transformers``), so the report was swallowed and the error pointed at nothing. The
report is captured here, and a failed load names the first mismatched weights and both shapes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

# ``from_pretrained`` hands modeling_utils' logger to the report (loading_report's own is the fallback).
REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")
_ROW = re.compile(
    r"^(?P<key>[^|]+?)\s*\|\s*MISMATCH\s*\|.*ckpt: torch\.Size\((?P<ckpt>\[[^\]]*\])\) vs "
    r"model: ?torch\.Size\((?P<model>\[[^\]]*\])\)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SHOWN = 2  # mismatched weights named in the line; the rest are counted


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(_ANSI.sub("", record.getMessage()))
        if record.levelno >= logging.ERROR:  # what the quiet load still shows
            logging.getLogger("transformers").handle(record)


@contextmanager
def load_report_errors() -> Iterator[None]:
    """Capture the load report (off the console) and re-raise a load that failed on it as one
    ``ValueError`` naming the folder, the mismatched weights and their shapes."""
    keep = _Keep()
    loggers = [logging.getLogger(name) for name in REPORT_LOGGERS]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(keep)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    try:
        yield
    except RuntimeError as e:
        reports = [m for m in keep.messages if "LOAD REPORT" in m]
        if "above report" not in str(e) or not reports:
            raise
        raise ValueError(mismatch_message(reports[-1])) from None
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(keep)
            logger.setLevel(level)
            logger.propagate = propagate


def mismatch_message(report: str) -> str:
    """``report`` (one LOAD REPORT) as one line."""
    folder = report.split(" from: ", 1)[1].split("\n", 1)[0].strip() if " from: " in report else "?"
    rows = [m for m in map(_ROW.match, report.splitlines()) if m]
    if not rows:
        return f"the weights in {folder} cannot be loaded as its config.json describes them"
    shown = "; ".join(
        f"{m['key']} is {m['ckpt']} in the weights, {m['model']} by the config" for m in rows[:_SHOWN]
    )
    more = f" (and {len(rows) - _SHOWN} more)" if len(rows) > _SHOWN else ""
    return f"the weights in {folder} do not match its config.json: {shown}{more}"
