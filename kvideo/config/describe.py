"""One line per config key, from the config dataclasses' own docstrings: ``python train.py
--help`` shows them (``conf/hydra/help/kvideo.yaml`` calls the ``kvideo.keys_help`` resolver).

A dataclass documents its fields as entries of its docstring, ``name: what it is`` (or
``a / b: what they are`` for fields described together), an entry running on over the lines
indented below it. The first sentence of an entry is its one-line description;
``tests/unit/test_config.py`` checks that every field of every node has one.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kvideo.config.root import KVideoConfig

_ENTRY = re.compile(r"^ {4}([a-z_]+(?: / [a-z_]+)*): (.*)$")
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<=[a-z0-9)`'])\. ")


def field_descriptions(cls: type[Any]) -> dict[str, str]:
    """Field name -> its one-line description, for the fields ``cls``'s docstring documents."""
    found: dict[str, str] = {}
    names: list[str] = []
    for line in (cls.__doc__ or "").splitlines():
        entry = _ENTRY.match(line)
        if entry:
            names = entry.group(1).split(" / ")
            for name in names:
                found[name] = entry.group(2).strip()
        elif line.startswith("        ") and names:  # the entry goes on
            for name in names:
                found[name] += " " + line.strip()
        else:
            names = []
    return {
        name: _SENTENCE_END.split(text, maxsplit=1)[0].rstrip(".").replace("``", "`")
        for name, text in found.items()
    }


def keys_help() -> str:
    """``node.key: description`` for every key of the schema, node by node (the composed values
    are Hydra's ``$CONFIG``, printed after them)."""
    lines: list[str] = []
    for node in dataclasses.fields(KVideoConfig):
        cls = node.type if isinstance(node.type, type) else type(getattr(KVideoConfig(), node.name))
        descriptions = field_descriptions(cls)
        lines.append(f"{node.name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        for f in dataclasses.fields(cls):
            lines.append(f"  {node.name}.{f.name}: {descriptions.get(f.name, '')}".rstrip())
        lines.append("")
    # Hydra fills the help template with string.Template, where "$" starts a placeholder.
    return "\n".join(lines).rstrip().replace("$", "$$")
