"""``EvalConfig``: what ``eval.py`` composes: which checkpoint, which split, how to generate.

It is a ``KVideoConfig`` with these fields added, so the run config's nodes (``video``,
``decoder``, ``data``, ``model``, ``trainer``) are there and ``python eval.py ckpt_path=RUN
video.max_frames=16`` type-checks exactly as ``train.py`` would. Their composed values are
defaults, not the run's: the run's own config (``<run_dir>/config.yaml``) is what evaluates,
and only the keys named on the command line are changed in it (``kvideo.launch.eval_overrides``).
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from kvideo.config.checks import require_non_negative, require_positive
from kvideo.config.root import KVideoConfig

EVAL_SCHEMA_NAME = "kvideo_eval_schema"
# EvalConfig's own keys: the rest of a command line is about the run's config.
EVAL_KEYS = ("ckpt_path", "split", "max_new_tokens", "batch_size", "device")


@dataclass
class EvalConfig(KVideoConfig):
    """ckpt_path: a run dir (its newest checkpoint) or a checkpoint file.
    split: the split to evaluate (``validation``; ``train`` works too).
    max_new_tokens: cap on each generated caption.
    batch_size: clips per forward; 0 = the run's ``trainer.batch_size``.
    device: ``cpu``, ``cuda`` or ``auto``; empty = the run's ``trainer.device``.
    """

    ckpt_path: str = MISSING
    split: str = "validation"
    max_new_tokens: int = 32
    batch_size: int = 0
    device: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("max_new_tokens", self.max_new_tokens)
        require_non_negative("batch_size", self.batch_size)
