"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, saying where each job's
logs are as it submits them.

The plugin's ``launch()`` submits the sweep as one job array and then waits for every job,
printing nothing about the jobs; to follow one, a user had to find ``.submitit/<id>/`` by hand.
This subclass changes nothing of what is submitted: while the plugin's ``launch()`` runs, the
executor it builds (``submitit.AutoExecutor``, looked up by the plugin at that moment) is one that
logs each job's SLURM id and its stdout and stderr files right after ``sbatch`` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher

log = logging.getLogger(__name__)


class SlurmLauncher(PluginSlurmLauncher):  # type: ignore[misc]  # the plugin ships no types
    """The plugin's ``SlurmLauncher`` (same name: ``kvideo.preflight.memory`` recognises a SLURM
    launcher by it), announcing each submitted job's log files."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        plugin_executor = submitit.AutoExecutor
        submitit.AutoExecutor = _announcing(plugin_executor, initial_job_idx)  # type: ignore[misc]
        try:
            returns: Sequence[JobReturn] = super().launch(job_overrides, initial_job_idx)
            return returns
        finally:
            submitit.AutoExecutor = plugin_executor  # type: ignore[misc]


def _announcing(executor: type[Any], first_index: int) -> type[Any]:
    class AnnouncingExecutor(executor):  # type: ignore[misc]
        def map_array(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
            jobs: list[Any] = super().map_array(fn, *iterables)
            for index, job in enumerate(jobs, start=first_index):
                log.info(
                    "job #%d is SLURM job %s: logs %s and %s",
                    index,
                    job.job_id,
                    job.paths.stdout,
                    job.paths.stderr,
                )
            return jobs

    return AnnouncingExecutor
