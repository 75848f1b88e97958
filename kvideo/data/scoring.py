"""Attribute questions a dataset asks of its captions, for validation (the dataset -> evaluation boundary).

The caption loss alone hides whether a model *looks*: it can lower the loss on a template's
fixed words. A dataset whose captions name attributes (colour, shape, motion, ...) can say so by
registering an ``AttributeScorer`` in ``ATTRIBUTE_SCORERS`` under its ``video.dataset_type``,
next to its builder. Validation then asks one forced-choice question per attribute: the model
scores every caption of the clip's ``CandidateSet`` and is right on an attribute when the true
option's caption has the lowest NLL; chance is ``1 / len(options)``. A dataset without a scorer
gets the loss only.

Torch-free: dataset packages import this at registration, and they must stay light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kvideo.registry import DATASETS, Registry


@dataclass(frozen=True)
class CandidateSet:
    """The captions that answer one clip's attribute questions.

    captions: Candidate captions; ``captions[0]`` is the true caption (shared by every question).
    groups: Per attribute, for each of its options in order, the index into ``captions`` of the
        caption stating that option.
    truth: Per attribute, the position of the true option in ``groups[attribute]``.
    """

    captions: tuple[str, ...]
    groups: dict[str, tuple[int, ...]]
    truth: dict[str, int]


class AttributeScorer(Protocol):
    """What a dataset provides to have per-attribute accuracy measured.

    attributes: Each attribute's options, in a fixed order; the metrics are ``acc_<attribute>``
        and ``chance_<attribute>`` (``1 / len(options)``).
    """

    attributes: Mapping[str, Sequence[str]]

    def candidate_set(self, caption: str) -> CandidateSet | None:
        """The questions for a clip with this caption; ``None`` when the caption names no
        attributes this scorer knows (that clip then counts in the loss only)."""
        ...

    # Optional: ``read_attributes(text) -> Mapping[str, str]``, the options a free text states
    # (``eval.py`` scores generated captions with it: ``gen_acc_<attribute>``).


ATTRIBUTE_SCORERS: Registry[AttributeScorer] = Registry("attribute scorer", key="video.dataset_type")


def attribute_scorers(dataset_type: str) -> list[AttributeScorer]:
    """The scorers validation consults for ``dataset_type``: its own, or none (loss only)."""
    DATASETS.get(dataset_type)  # a plugin's scorer is registered next to its builder: import that
    return [ATTRIBUTE_SCORERS.get(dataset_type)] if dataset_type in ATTRIBUTE_SCORERS else []
