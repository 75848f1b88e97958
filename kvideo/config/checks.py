"""Small validation helpers whose messages all name the field the way a user types it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def require_finite(field: str, value: float) -> None:
    """NaN compares false with everything, so ``value <= 0`` alone lets it through."""
    if not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number (got {value})")


def require_positive(field: str, value: float) -> None:
    require_finite(field, value)
    if value <= 0:
        raise ValueError(f"{field} must be positive (got {value})")


def require_non_negative(field: str, value: float) -> None:
    require_finite(field, value)
    if value < 0:
        raise ValueError(f"{field} must be non-negative (got {value})")


def require_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{field} must be in [{low}, {high}] (got {value})")


def require_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{field} must be one of {choices} (got {value!r})")


def require_choices(field: str, values: Iterable[Any], choices: Iterable[Any]) -> None:
    """A list option: each entry one of ``choices``, none twice (a tracker opened twice would
    log every value twice)."""
    choices, seen = list(choices), []
    for value in values:
        if value not in choices:
            raise ValueError(f"{field} entries must each be one of {choices} (got {value!r})")
        if value in seen:
            raise ValueError(f"{field} lists {value!r} twice")
        seen.append(value)


def require_caption_room(
    context_tokens: int, max_text_len: int, tokenizer: str, field: str = "video.prompt"
) -> None:
    """The text slot holds the context (BOS + prompt, or the chat template's user turn) + caption
    + EOS, cut at ``model.max_text_len``: a context that fills it masks every caption token, and
    the run would "train" on loss 0 (or caption nothing). ``field`` names where the prompt came
    from (``kvideo.caption``'s ``--prompt``)."""
    if context_tokens + 1 > max_text_len:
        raise ValueError(
            f"{field} leaves no room for the caption: its context (BOS + prompt, or the chat "
            f"template's user turn) is {context_tokens} tokens ({tokenizer}) of model.max_text_len "
            f"({max_text_len}); shorten {field} or raise model.max_text_len"
        )


def visuals_factor(visuals: int) -> tuple[str, str]:
    """``data.max_visuals`` as a factor of a formula, by name and in numbers (``"data.max_visuals
    * "``, ``"3 * "``), or nothing when it is 1: the messages of a one-visual run stay as they were."""
    return ("data.max_visuals * ", f"{visuals} * ") if visuals > 1 else ("", "")


def require_token_budget(
    max_frames: int,
    tokens_per_frame: int,
    max_text_len: int,
    context: int,
    *,
    per_frame_name: str = "model.tokens_per_frame",
    context_name: str = "model.max_seq_len",
    visuals: int = 1,
) -> None:
    """``visuals * max_frames * tokens_per_frame + max_text_len`` tokens must fit the context,
    with the arithmetic in the message (``visuals``: ``data.max_visuals``, named when above 1)."""
    total = visuals * max_frames * tokens_per_frame + max_text_len
    if total > context:
        clips, count = visuals_factor(visuals)
        raise ValueError(
            f"token budget exceeded: {clips}video.max_frames * {per_frame_name} + model.max_text_len "
            f"= {count}{max_frames} * {tokens_per_frame} + {max_text_len} = {total} "
            f"> {context_name} ({context})"
        )


def require_at_most(field: str, value: float, limit: float, why: str) -> None:
    """Upper bounds for sizes that allocate: past them a run cannot fit (or makes no sense), and
    without a bound the first sign is an OOM kill minutes later, or a crash in the allocator."""
    if value > limit:
        raise ValueError(f"{field} must be at most {limit} (got {value}): {why}")
