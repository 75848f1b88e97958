"""Nested mappings (a composed config, a ``final.json``) as flat ``{"dotted.key": leaf}`` dicts.

Flat keys are what tables and trackers can show: a sweep report column, a TensorBoard hparam,
a W&B config key. Torch-free: the sweep report and the config path use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Scalar = int | float | str | bool
"""A leaf that every tracker can show as one value; lists and ``None`` are not."""


def scalar_leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """The scalar leaves of ``tree`` under dotted keys: ``{"skipped": {"missing": 2}}`` becomes
    ``{"skipped.missing": 2}``. Lists and ``None`` are left out: no tracker compares them."""
    leaves: dict[str, Scalar] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            leaves.update(scalar_leaves(value, f"{name}."))
        elif isinstance(value, int | float | str | bool):
            leaves[name] = value
    return leaves
