"""What every experiment tracker is told, and the shape of a prediction row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

PREDICTION_COLUMNS = ("video", "reference", "generated")
"""The keys of one prediction row: which clip, its reference caption, the generated caption."""


class ExperimentLogger(Protocol):
    """A tracker the run's numbers are mirrored to, besides ``metrics.jsonl`` (the record of
    truth). Only rank 0 opens one; ``step`` is the optimizer step every value belongs to."""

    def log_config(self, config: Mapping[str, Any], yaml_text: str, step: int) -> None:
        """The composed config at (re)start: as a nested mapping and as the YAML people read."""

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Numbers under ``group/name`` tags (``train/loss``, ``val/acc_color``)."""

    def log_predictions(self, rows: Sequence[Mapping[str, str]], step: int) -> None:
        """Generated captions beside their references (``PREDICTION_COLUMNS``)."""

    def log_final(self, final: Mapping[str, Any], step: int) -> None:
        """The final metrics of a completed run (``final.json``)."""

    def close(self) -> None:
        """Flush and release; nothing is logged after this."""
