"""The sample corpus's attribute questions: colour, shape and direction, one at a time.

For a clip captioned "a red circle moves left", the colour question compares
"a {c} circle moves left" for every colour c, the shape and direction questions likewise; the
true caption answers all three. Varying one attribute at a time isolates it, so chance is
``1 / len(options)`` per attribute (0.25, 0.33, 0.25) and the numbers say directly whether the
model looks at colour and shape (any frame shows them) and at motion (only frames compared do).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from kvideo.data.datasets.sample.captions import ATTRIBUTES, caption_for, parse_caption
from kvideo.data.scoring import CandidateSet


def candidate_set(caption: str) -> CandidateSet | None:
    """Candidates differing from ``caption`` in exactly one attribute; ``None`` when the
    caption is not a template caption (then only the loss is measured)."""
    parsed = parse_caption(caption)
    if parsed is None:
        return None
    captions = [caption_for(**parsed)]
    groups: dict[str, tuple[int, ...]] = {}
    truth: dict[str, int] = {}
    for attr, options in ATTRIBUTES.items():
        idxs = []
        for option in options:
            if option == parsed[attr]:
                idxs.append(0)
            else:
                captions.append(caption_for(**{**parsed, attr: option}))
                idxs.append(len(captions) - 1)
        groups[attr] = tuple(idxs)
        truth[attr] = options.index(parsed[attr])
    return CandidateSet(tuple(captions), groups, truth)


def read_attributes(text: str) -> dict[str, str]:
    """The options a free text states: for each attribute, the one option named as a whole word
    (none when it names no option or several). Generated captions are scored this way, so a
    caption right on colour and wrong on the rest still counts for colour."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    said = {}
    for attr, options in ATTRIBUTES.items():
        named = [o for o in options if o in words]
        if len(named) == 1:
            said[attr] = named[0]
    return said


class SampleAttributeScorer:
    """The ``AttributeScorer`` registered for ``video.dataset_type=sample``."""

    attributes: Mapping[str, Sequence[str]] = ATTRIBUTES

    def candidate_set(self, caption: str) -> CandidateSet | None:
        return candidate_set(caption)

    def read_attributes(self, text: str) -> dict[str, str]:
        return read_attributes(text)
