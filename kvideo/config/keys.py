"""Which keys the schema has, so that a typo is refused with what was meant.

OmegaConf drops a key the schema lacks when it builds the dataclasses, so ``python train.py
+video.fsp=2`` would train at the default fps and write a ``config.yaml`` without the typo. And
Hydra answers ``video.fsp=2`` with "To append to your config use +video.fsp=2", which leads
there. Both are refused here, in one line naming the key and the closest real one.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

RENAMED_KEYS = {"data.val_max_samples": "video.val_max_samples"}
"""Keys that moved (old dotted key -> new). Given on a command line or in a config file, an old
key is refused in one line naming the new one; a run dir's ``config.yaml`` written before the move
is read with the key moved (``with_keys_moved``)."""


def with_keys_moved(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config (plain data, as ``config.yaml`` holds it) with every ``RENAMED_KEYS`` key
    at its new place; a value already at the new place wins."""
    for old, new in RENAMED_KEYS.items():
        old_parent, _, old_name = old.rpartition(".")
        node = saved.get(old_parent)
        if not isinstance(node, dict) or old_name not in node:
            continue
        value = node.pop(old_name)
        new_parent, _, new_name = new.rpartition(".")
        saved.setdefault(new_parent, {}).setdefault(new_name, value)
    return saved


def _nested_schema(owner: type, name: str) -> type | None:
    """The dataclass a field of ``owner`` holds, or ``None`` for a leaf, a list or a mapping."""
    hint = typing.get_type_hints(owner).get(name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def schema_keys(schema: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the dataclass ``schema`` (``video``, ``video.fps``, ...)."""
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        yield key
        nested = _nested_schema(schema, f.name)
        if nested is not None:
            yield from schema_keys(nested, key + ".")


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """The dotted keys under ``cfg``'s nodes that ``schema`` has no field for (the top level's
    extras, such as ``hydra``, are not the schema's business and are not listed)."""
    names = {f.name for f in dataclasses.fields(schema)}
    unknown: list[str] = []
    for key in cfg.keys():
        name = str(key)
        if name not in names:
            if prefix:
                unknown.append(prefix + name)
            continue
        nested = _nested_schema(schema, name)
        node = cfg._get_node(name)
        if nested is not None and isinstance(node, DictConfig) and not node._is_missing():
            unknown.extend(unknown_keys(node, nested, f"{prefix}{name}."))
    return unknown


def unknown_key_message(key: str, schema: type) -> str:
    """``<key> is not a setting`` with the closest real key, for the refusal's one line: by its
    last name among its node's keys (``video.fsp``: ``video.fps``), else by the whole key
    (``trainr.lr``: ``trainer.lr``); a key that moved names its new place (``RENAMED_KEYS``)."""
    if key in RENAMED_KEYS:
        return f"{key} is now {RENAMED_KEYS[key]}"
    known = list(schema_keys(schema))
    parent, _, name = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = [siblings[n] for n in difflib.get_close_matches(name, list(siblings), n=1, cutoff=0.6)]
    if not close and not siblings:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    hint = (
        f"; did you mean {close[0]}?"
        if close
        else f" (see python train.py --cfg job for {parent or 'the keys'})"
    )
    return f"{key} is not a kvideo setting{hint}"


def refuse_unknown_keys(cfg: DictConfig | Any, schema: type) -> None:
    """``ValueError`` for the first key of ``cfg`` that ``schema`` lacks."""
    if isinstance(cfg, DictConfig):
        unknown = unknown_keys(cfg, schema)
        if unknown:
            raise ValueError(unknown_key_message(unknown[0], schema))


def drop_unknown_keys(cfg: DictConfig, schema: type) -> list[str]:
    """Remove from ``cfg`` (in place) the keys ``schema`` lacks and return them: for a run's own
    saved config, whose extra keys are settings of the kvideo version that wrote it."""
    unknown = unknown_keys(cfg, schema)
    for key in unknown:
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            node.pop(name, None)
    return unknown
