"""Train a video-language model: ``python train.py [overrides]`` (Hydra CLI).

Kept thin: compose (Hydra) -> ``kvideo.preflight.checked`` (the schema's rules, then model
folders and memory) -> ``kvideo.train.train``. Heavy imports (torch, decord) happen after
both, so ``--cfg job`` stays fast and a bad config fails before any work.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kvideo.config import register_configs
from kvideo.launch.override_keys import refuse_unknown_overrides
from kvideo.launch.printed_config import preflight_printed_config
from kvideo.preflight import checked

register_configs()
CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        run_cfg = checked(cfg)
    except ValueError as e:
        print(f"kvideo: invalid config: {e}", file=sys.stderr)
        sys.exit(2)
    from kvideo.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        result = train(run_cfg, run_dir=run_dir)
        if result.get("status") == "preempted":
            # The checkpoint is on disk: now let a launcher's own handler act (submitit's
            # requeues the job and exits; past max_num_timeout it raises); otherwise exit
            # "temporary failure, run me again".
            from kvideo.train.signals import EXIT_PREEMPTED, run_deferred_handlers

            run_deferred_handlers()
            print(f"kvideo: preempted; to continue: {_resume(hydra_cfg, run_dir)}", file=sys.stderr)
            sys.exit(EXIT_PREEMPTED)
    except KeyboardInterrupt:
        print(
            f"kvideo: interrupted; {run_dir} keeps its last checkpoint; to continue: "
            f"{_resume(hydra_cfg, run_dir)}",
            file=sys.stderr,
        )
        sys.exit(130)
    except Exception as e:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # Bad data, a failed run, a missing GPU: one line that says why; the traceback
            # is one environment variable away.
            print(f"kvideo: {_one_line(e)} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
            sys.exit(1)
        # In a sweep, one failed job must not hide the others' results: record the
        # failure for the sweep report (which then exits non-zero) and carry on.
        logging.getLogger("kvideo").exception("job failed")
        if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0:
            from kvideo.train.guards import write_failed

            # Unless the training loop already wrote it, with the step and its checkpoint.
            write_failed(run_dir, _one_line(e), None, traceback=traceback.format_exc())
        return None
    # Returned for sweepers that optimise a metric (e.g. Optuna): lower is better.
    return result.get("val_loss")


def _resume(hydra_cfg: Any, run_dir: Path) -> str:
    from kvideo.launch.resume_command import resume_command

    return resume_command(list(hydra_cfg.overrides.task), run_dir)


def _one_line(e: BaseException) -> str:
    """The exception's message on one line; its type only where the message needs it."""
    from kvideo.errors import one_line
    from kvideo.train.guards import RunDirBusy, RunFailed

    text = one_line(e)
    if isinstance(e, RunFailed):
        return f"run failed: {text}"
    if isinstance(e, RunDirBusy | ValueError | OSError | RuntimeError | KeyError):
        return text
    return f"{type(e).__name__}: {text}"


if __name__ == "__main__":
    refuse_unknown_overrides(sys.argv[1:], CONF_DIR)
    preflight_printed_config(sys.argv[1:], CONF_DIR)
    main()
