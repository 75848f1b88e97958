"""TensorBoard: scalars, the config (hparams and YAML text) and predictions as text.

Hyperparameters are written as a session start only, never as an experiment summary: the
hparams dashboard then builds the experiment from every run it finds (each job of a sweep
is one run) and takes every scalar as a metric. An experiment summary per run would make
it pick one run's summary arbitrarily. The session end is written when the run completes,
with the final metrics as ``final/*`` scalars at the last step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvideo.markdown import markdown_table as text_table
from kvideo.train.loggers._protocol import PREDICTION_COLUMNS
from kvideo.trees import scalar_leaves


def markdown_table(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    """``rows`` as a Markdown table (TensorBoard renders text as Markdown)."""
    return text_table(columns, ([row.get(c, "") for c in columns] for row in rows))


def _hparams_summaries(hparams: Mapping[str, Any]) -> tuple[Any, Any]:
    """The (session start, session end) summaries of the hparams plugin for ``hparams``."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    # torch leaves this function unannotated
    _experiment, session_start, session_end = hparams_summaries(dict(hparams), {})  # type: ignore[no-untyped-call]
    return session_start, session_end


class TensorBoardLogger:
    """Events in ``log_dir``; ``purge_step`` hides what an interrupted run wrote past the step
    its resumed run restarts from (TensorBoard drops those events when it reads the files)."""

    PACKAGE = "tensorboard"
    INSTALL_HINT = "pip install tensorboard"

    def __init__(self, log_dir: Path, *, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self._hparams: dict[str, Any] = {}

    def log_config(self, config: Mapping[str, Any], yaml_text: str, step: int) -> None:
        self._hparams = dict(scalar_leaves(config))
        session_start, _ = _hparams_summaries(self._hparams)
        self._add_summary(session_start, step)
        # A fenced block: TensorBoard renders text as Markdown, which would reflow YAML.
        self._writer.add_text("config", f"```yaml\n{yaml_text}```", step)
        self._writer.flush()

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def log_predictions(self, rows: Sequence[Mapping[str, str]], step: int) -> None:
        self._writer.add_text("val/predictions", markdown_table(rows, PREDICTION_COLUMNS), step)
        self._writer.flush()

    def log_final(self, final: Mapping[str, Any], step: int) -> None:
        for key, value in scalar_leaves(final).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._writer.add_scalar(f"final/{key}", value, step)
        _, session_end = _hparams_summaries(self._hparams)
        self._add_summary(session_end, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def _add_summary(self, summary: Any, step: int) -> None:
        file_writer = self._writer.file_writer
        assert file_writer is not None, "TensorBoardLogger used after close()"
        file_writer.add_summary(summary, step)
