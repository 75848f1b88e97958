"""Name each SLURM job's log files as the sweep submits it.

hydra-submitit-launcher's ``launch()`` submits the sweep as one job array, then waits for every
job, printing nothing about the jobs: to follow one, a user had to find ``.submitit/<id>/`` by
hand. Hydra instantiates only launchers defined in the ``hydra_plugins`` namespace, so kvideo
does not subclass the launcher; ``SlurmJobLogsCallback`` (a Hydra callback, run in the
submitting process before the launcher starts) instead makes the executor the plugin looks up,
``submitit.AutoExecutor``, one that logs each job's SLURM id and its stdout and stderr files
right after ``sbatch`` returns. What is submitted does not change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class SlurmJobLogsCallback(Callback):
    """With ``hydra/launcher=slurm``: from the sweep's start to its end, submitted jobs are
    announced with their log files."""

    def __init__(self) -> None:
        self._plugin_executor: type[Any] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if not target.endswith("SlurmLauncher"):
            return
        import submitit

        self._plugin_executor = submitit.AutoExecutor
        submitit.AutoExecutor = announcing(submitit.AutoExecutor)  # type: ignore[misc]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._plugin_executor is not None:
            import submitit

            submitit.AutoExecutor = self._plugin_executor  # type: ignore[misc]
            self._plugin_executor = None


def announcing(executor: type[Any]) -> type[Any]:
    """``executor`` whose ``map_array`` logs each job it submitted. The launcher passes each
    job's sweep index as the third argument list (``job_num`` of its ``__call__``)."""

    class AnnouncingExecutor(executor):  # type: ignore[misc]
        def map_array(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
            lists = [list(values) for values in iterables]
            jobs: list[Any] = super().map_array(fn, *lists)
            numbers = lists[2] if len(lists) > 2 else range(len(jobs))
            for number, job in zip(numbers, jobs, strict=False):
                log.info(
                    "job #%s is SLURM job %s: logs %s and %s",
                    number,
                    job.job_id,
                    job.paths.stdout,
                    job.paths.stderr,
                )
            return jobs

    return AnnouncingExecutor
