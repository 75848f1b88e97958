"""The sample corpus's caption grammar: "a {color} {shape} moves {direction}".

Torch-free and tiny on purpose: the generator (``corpus``) writes these captions and the
corpus's attribute questions (``evaluation``) read them back. Those questions are only
meaningful because each caption maps back to exactly one attribute triple (``parse_caption`` is
the inverse of ``caption_for``).
"""

from __future__ import annotations

import itertools
import re

# Attribute vocabularies. Drawn uniformly and independently per clip, so no attribute
# predicts another and a model has to look at colour, shape *and* motion.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": ("red", "green", "blue", "yellow"),
    "shape": ("circle", "square", "triangle"),
    "direction": ("left", "right", "up", "down"),
}

TEMPLATE = "a {color} {shape} moves {direction}"

_PATTERN = re.compile(
    r"a (?P<color>{}) (?P<shape>{}) moves (?P<direction>{})".format(
        *("|".join(map(re.escape, ATTRIBUTES[key])) for key in ("color", "shape", "direction"))
    )
)


def caption_for(color: str, shape: str, direction: str) -> str:
    """The caption of a clip with these attributes; raises on an unknown value."""
    values = {"color": color, "shape": shape, "direction": direction}
    for key, value in values.items():
        if value not in ATTRIBUTES[key]:
            raise ValueError(f"unknown {key} {value!r}; choices: {ATTRIBUTES[key]}")
    return TEMPLATE.format(**values)


def parse_caption(caption: str) -> dict[str, str] | None:
    """``{"color", "shape", "direction"}`` of a template caption, else ``None``.

    Surrounding whitespace and case are ignored so a generated caption that only
    differs in those still scores.
    """
    match = _PATTERN.fullmatch(caption.strip().lower())
    return match.groupdict() if match else None


def all_captions() -> list[str]:
    """Every caption the corpus can contain."""
    return [caption_for(*combo) for combo in itertools.product(*ATTRIBUTES.values())]
