"""Which trackers a run opens (``trainer.loggers``), and the check that they are installed."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from kvideo.train.loggers._protocol import ExperimentLogger
from kvideo.train.loggers._tensorboard import TensorBoardLogger
from kvideo.train.loggers._wandb import WandbLogger

TB_DIRNAME = "tb"

# By the name ``trainer.loggers`` uses (kvideo.config.trainer.LOGGERS lists the same names:
# the config path cannot import this package, which imports torch).
LOGGER_TYPES: dict[str, type[TensorBoardLogger] | type[WandbLogger]] = {
    "tensorboard": TensorBoardLogger,
    "wandb": WandbLogger,
}


def require_installed(names: Sequence[str]) -> None:
    """Fail at trainer start, not at the first log line, when a requested tracker's package is
    missing (the message says how to install it). Cheap: nothing is imported."""
    for name in names:
        logger_type = LOGGER_TYPES.get(name)
        if logger_type is None:
            known = list(LOGGER_TYPES)
            raise ValueError(f"trainer.loggers entries must each be one of {known} (got {name!r})")
        if find_spec(logger_type.PACKAGE) is None:
            raise RuntimeError(
                f"trainer.loggers includes {name}, which is not installed: {logger_type.INSTALL_HINT}"
            )


def open_loggers(
    names: Sequence[str], run_dir: Path, *, resume_step: int | None, wandb_project: str
) -> list[ExperimentLogger]:
    """The trackers ``names`` asks for, opened in ``run_dir`` (rank 0 only).

    ``resume_step``: the checkpoint step a resumed run restarts from (``None`` on a fresh
    start); TensorBoard hides what the interrupted run wrote after it.
    """
    require_installed(names)
    loggers: list[ExperimentLogger] = []
    try:
        for name in names:
            if name == "tensorboard":
                purge_step = None if resume_step is None else resume_step + 1
                loggers.append(TensorBoardLogger(run_dir / TB_DIRNAME, purge_step=purge_step))
            elif name == "wandb":
                loggers.append(WandbLogger(run_dir, project=wandb_project))
    except BaseException:
        for logger in loggers:  # e.g. W&B refused to start (no login): release TensorBoard's files
            logger.close()
        raise
    return loggers
