"""Which keys of the run's config an ``eval.py`` command line changes, and to what.

``eval.py`` composes ``conf/eval.yaml`` (the same groups as ``train.py``) so its command line is
checked like ``train.py``'s, then evaluates the run's *own* config with only the named keys
changed: a field override (``video.max_frames=16``) changes that field, a group choice
(``video/sampling=qwen``) the fields its file sets. Values are taken from the composed config,
so they arrive typed and validated by the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from kvideo.config.evaluation import EVAL_KEYS


def _package(group_file: Path, group: str) -> str:
    """The node a group file writes into: its ``# @package`` line, else the group's path."""
    for line in group_file.read_text().splitlines():
        if line.startswith("# @package "):
            return line.removeprefix("# @package ").strip()
    return group.replace("/", ".")


def run_config_updates(
    composed: DictConfig, task_overrides: Sequence[str], config_dir: Path
) -> dict[str, Any]:
    """``{dotted key: value}`` to apply to the run's config for these command-line overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    updates: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        key = override.key_or_group
        if key in EVAL_KEYS or key.startswith("hydra"):
            continue
        group_file = config_dir / key / f"{override.value()}.yaml"
        if "." not in key and group_file.is_file():
            package = _package(group_file, key)
            own = yaml.safe_load(group_file.read_text()) or {}
            keys = [f"{package}.{k}" for k in own if k != "defaults"]
        else:
            keys = [key]
        for dotted in keys:
            value = OmegaConf.select(composed, dotted)
            updates[dotted] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return updates
