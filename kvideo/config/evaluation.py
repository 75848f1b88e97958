"""``EvalConfig``: what ``eval.py`` composes: which checkpoint, which split, how to generate.

It also carries the run config's nodes (``video``, ``decoder``, ``data``, ``model``,
``trainer``) so that ``python eval.py ckpt_path=RUN video.max_frames=16`` type-checks exactly as
``train.py`` would. Their composed values are defaults, not the run's: the run's own config
(``<run_dir>/config.yaml``) is what evaluates, and only the keys named on the command line are
changed in it (``kvideo.launch.eval_overrides``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from kvideo.config.checks import require_non_negative, require_positive
from kvideo.config.data import DataConfig
from kvideo.config.decoder import DecoderConfig
from kvideo.config.model import ModelConfig
from kvideo.config.trainer import TrainerConfig
from kvideo.config.video import VideoConfig

EVAL_SCHEMA_NAME = "kvideo_eval_schema"
# EvalConfig's own keys: the rest of a command line is about the run's config.
EVAL_KEYS = ("ckpt_path", "split", "max_new_tokens", "batch_size", "device")


@dataclass
class EvalConfig:
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
    video: VideoConfig = field(default_factory=VideoConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        require_positive("max_new_tokens", self.max_new_tokens)
        require_non_negative("batch_size", self.batch_size)
