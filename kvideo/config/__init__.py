"""Structured configs composed by Hydra, their rules checked when built (see ``conf/``)."""

from kvideo.config.data import DataConfig
from kvideo.config.decoder import DecoderConfig
from kvideo.config.model import ModelConfig
from kvideo.config.root import KVideoConfig, check_cross_fields, config_from, launcher_fields
from kvideo.config.store import register_configs
from kvideo.config.trainer import TrainerConfig
from kvideo.config.video import VideoConfig

__all__ = [
    "DataConfig",
    "DecoderConfig",
    "KVideoConfig",
    "ModelConfig",
    "TrainerConfig",
    "VideoConfig",
    "check_cross_fields",
    "config_from",
    "launcher_fields",
    "register_configs",
]
