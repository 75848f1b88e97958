"""Errors as the one line a person reads: the console, ``train.log``, ``failed.json``.

Shared by every layer (it imports nothing of kvideo), so the rule is written once: the
message's whitespace collapsed to single spaces, the exception's type where the message is
empty, and a bounded length, so that an error quoting a huge input (a 2,000,000-element list)
is still one readable line.
"""

from __future__ import annotations

# Long enough for a path, a field and what was expected; short enough for one terminal line
# or two.
MAX_LINE = 500


def one_line(error: BaseException | str, *, limit: int = MAX_LINE) -> str:
    """``error``'s message on one line, at most ``limit`` characters (cut with ``...``).

    A ``KeyError``'s message is its key, not ``str(KeyError)``'s quoted repr.
    """
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error)
    text = " ".join(text.split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(error: BaseException, *, typed: bool = False) -> str:
    """The first line of ``error``'s message (its type's name when it has none), for errors whose
    later lines are advice that does not apply (torch's "retry with weights_only=False").
    ``typed``: prefix the type, ``OSError: ...``, where the message alone would not say what
    failed."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    return f"{type(error).__name__}: {lines[0]}" if typed else lines[0]
