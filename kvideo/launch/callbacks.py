"""Hydra callbacks that make multirun sweeps safe and self-reporting.

Named by ``_target_`` in ``conf/config.yaml`` (``hydra.callbacks``); kept in the package (not in
``train.py``) so submitit's cloudpickle can import them. They run inside Hydra's own app, so they
compose through its config loader (``load_sweep_config``), not ``kvideo.config.compose``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from kvideo.files import refuse_planted_link
from kvideo.preflight import checked


def sweep_points(config: DictConfig) -> list[list[str]]:
    """Every job's override list, expanded the way BasicSweeper expands the command line."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    task_overrides = list(config.hydra.overrides.task)
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(task_overrides)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(point) for batch in batches for point in batch]


class CheckSweepCallback(Callback):
    """Check every sweep point (the schema's rules), and run its pre-flight step, before any job
    starts.

    Hydra composes a grid but never runs ``__post_init__`` (only ``to_object`` does),
    and the basic launcher runs point 1 before composing point 2: without this, a bad
    value in the last point is discovered after hours of compute. Raises
    ``SystemExit`` because Hydra turns ordinary callback exceptions into warnings.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        loader = GlobalHydra.instance().config_loader()
        points = sweep_points(config)
        errors = []
        for overrides in points:
            job_cfg = loader.load_sweep_config(config, overrides)
            try:
                checked(job_cfg)
            except ValueError as e:
                errors.append(f"  [{' '.join(overrides)}] {e}")
        if errors:
            print(
                f"kvideo: refusing to launch: {len(errors)} of {len(points)} sweep points are invalid:\n"
                + "\n".join(errors),
                file=sys.stderr,
            )
            raise SystemExit(2)


class PlantedLinkCallback(Callback):
    """Refuse a run dir (a sweep dir) that holds a symbolic link, before Hydra writes
    ``.hydra/`` and its log there: Hydra, TensorBoard, DCP and ``save_pretrained`` all write
    through links (``kvideo.files.planted_link``). ``SystemExit`` as above."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse(str(config.hydra.run.dir), "run dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse(str(config.hydra.sweep.dir), "sweep dir")

    def _refuse(self, folder: str, what: str) -> None:
        try:
            refuse_planted_link(Path(folder), what)
        except ValueError as e:
            print(f"kvideo: {e}", file=sys.stderr)
            raise SystemExit(2) from None


class SweepReportCallback(Callback):
    """Write the sweep's comparison table and plots (final metrics, loss curves) when a
    multirun ends.

    Job failures are recorded by ``train.py`` as ``failed.json`` instead of being
    raised, so Hydra reaches this hook and the other jobs still report; the exit code
    is made non-zero here, after the report is written.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from kvideo.tools.sweep_report import build_report

        sweep_dir = config.hydra.sweep.dir
        jobs = build_report(sweep_dir)
        print(f"kvideo: sweep report written to {sweep_dir}/report.md (+ .csv, .png, report_curves.png)")
        bad = [j for j in jobs if j.status != "ok"]
        if bad:
            for job in bad:
                print(f"kvideo: job {job.num} {job.status}: {job.error}", file=sys.stderr)
            raise SystemExit(1)
