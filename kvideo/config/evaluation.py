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

from kvideo.config.checks import require_choice, require_non_negative, require_positive
from kvideo.config.root import KVideoConfig
from kvideo.config.video import VIDEO_SPLITS

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
        check_eval_keys(self.split, self.max_new_tokens, self.batch_size)


def check_eval_keys(split: str, max_new_tokens: int, batch_size: int) -> None:
    """``eval.py``'s own keys: it evaluates the run's config, so nothing else checks them (an
    ``max_new_tokens=-1`` would generate nothing and write all-zero metrics as results)."""
    require_choice("split", split, VIDEO_SPLITS)
    require_positive("max_new_tokens", max_new_tokens)
    require_non_negative("batch_size", batch_size)
