"""Weights & Biases: the same scalars as TensorBoard, the config, predictions as a table.

``wandb`` is an optional dependency (``pip install 'kvideo[wandb]'``), imported only when a
run asks for it. Where the run goes is wandb's business: ``WANDB_MODE=offline`` (or
``disabled``) in the environment is passed to ``wandb.init``, and the files land in
``<run_dir>/wandb/``.

A resumed run continues the same W&B run: its id is stored in the run dir at the first start.
W&B keeps one value per step and ignores steps below the last one it saw, so the steps a
resumed run re-does after its checkpoint keep the interrupted run's values; resume is exact
(``kvideo.train.loop``), so those are the same numbers.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvideo.files import write_text_atomic
from kvideo.train.loggers._protocol import PREDICTION_COLUMNS
from kvideo.trees import scalar_leaves

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

WANDB_ID_NAME = "wandb_run_id.txt"


def run_name(run_dir: Path) -> str:
    """The run dir's last two parts: Hydra's ``DATE/TIME`` for a run, ``TIME/JOB`` for a sweep
    job, so names tell runs of one day and jobs of one sweep apart."""
    return "/".join(run_dir.resolve().parts[-2:])


def stored_run_id(run_dir: Path) -> str:
    """This run dir's W&B run id: the one stored at the first start, else a new one (stored)."""
    path = run_dir / WANDB_ID_NAME
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = secrets.token_hex(6)  # W&B ids: lowercase letters and digits
    write_text_atomic(path, run_id + "\n")
    return run_id


class WandbLogger:
    """One W&B run per run dir, project ``project``, named after the run dir."""

    PACKAGE = "wandb"
    INSTALL_HINT = "pip install wandb (or pip install 'kvideo[wandb]')"

    def __init__(self, run_dir: Path, *, project: str) -> None:
        try:
            import wandb
        except ImportError as e:
            message = f"trainer.loggers includes wandb, which is not installed: {self.INSTALL_HINT}"
            raise RuntimeError(message) from e

        self._wandb = wandb
        self._run: Run = wandb.init(
            project=project,
            name=run_name(run_dir),
            id=stored_run_id(run_dir),
            resume="allow",
            dir=str(run_dir),
            mode=_mode_from_environment(),
        )

    def log_config(self, config: Mapping[str, Any], yaml_text: str, step: int) -> None:
        # A resumed run may continue under a changed config (RunWriter.write_config warns).
        self._run.config.update(dict(config), allow_val_change=True)  # type: ignore[no-untyped-call]

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self._run.log(dict(scalars), step=step)

    def log_predictions(self, rows: Sequence[Mapping[str, str]], step: int) -> None:
        columns: list[str | int] = ["step", *PREDICTION_COLUMNS]
        data = [[step, *(str(row.get(c, "")) for c in PREDICTION_COLUMNS)] for row in rows]
        self._run.log({"val/predictions": self._wandb.Table(columns=columns, data=data)}, step=step)

    def log_final(self, final: Mapping[str, Any], step: int) -> None:
        self._run.summary.update({f"final/{key}": value for key, value in scalar_leaves(final).items()})

    def close(self) -> None:
        self._run.finish()


def _mode_from_environment() -> Any:
    """``WANDB_MODE`` as ``wandb.init`` takes it; ``None`` (unset) lets wandb decide, which
    honours ``wandb offline`` too."""
    return os.environ.get("WANDB_MODE") or None
