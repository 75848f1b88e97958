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
