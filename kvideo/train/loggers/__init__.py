"""Experiment trackers a run mirrors its numbers to: TensorBoard (default) and W&B (optional),
chosen by ``trainer.loggers``. ``metrics.RunWriter`` owns them; rank 0 only.

Implementation in the private modules; this one re-exports.
"""

from kvideo.train.loggers._build import LOGGER_TYPES, TB_DIRNAME, open_loggers, require_installed
from kvideo.train.loggers._protocol import PREDICTION_COLUMNS, ExperimentLogger
from kvideo.train.loggers._tensorboard import TensorBoardLogger, markdown_table
from kvideo.train.loggers._wandb import WANDB_ID_NAME, WandbLogger, run_name

__all__ = [
    "LOGGER_TYPES",
    "PREDICTION_COLUMNS",
    "TB_DIRNAME",
    "WANDB_ID_NAME",
    "ExperimentLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "markdown_table",
    "open_loggers",
    "require_installed",
    "run_name",
]
