"""``train(cfg, run_dir) -> final metrics``: one training process from start to end around the
``Trainer`` (``kvideo.train.loop``): the process group, the run dir's lock, the preemption
handlers, the peer-failure watch, and the one log line of an error that ends the run."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from kvideo.config import KVideoConfig
from kvideo.errors import one_line
from kvideo.files import refuse_planted_link
from kvideo.train import signals
from kvideo.train.distributed import cleanup, init_distributed
from kvideo.train.failure import PeerFailureWatch
from kvideo.train.guards import RunDirLock
from kvideo.train.loop import Trainer
from kvideo.train.parallel import strategy_class
from kvideo.train.report import RUN_LOG
from kvideo.train.resume import check_resume


def _ensure_logging() -> None:
    """Plain ``python -c 'train(...)'`` has no logging config; Hydra's runs do."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")


def train(cfg: KVideoConfig, run_dir: Path | str) -> dict[str, Any]:
    """Train (or resume training) in ``run_dir``; returns the final metrics.

    The returned dict has ``status``: ``"completed"`` (``final.json`` written) or
    ``"preempted"`` (a SIGTERM/SIGUSR1/SIGUSR2/SIGINT or ``request_checkpoint_and_exit()`` made
    the loop checkpoint and stop; the caller should exit with ``signals.EXIT_PREEMPTED`` so the
    job is requeued, and the next start in the same ``run_dir`` resumes). A run that cannot
    learn raises ``RunFailed`` (``failed.json`` written); a run dir another live run holds
    raises ``RunDirBusy`` before anything is written. Any other error in the loop first
    checkpoints the last step boundary (``Trainer.checkpoint_after_crash``), then writes
    ``failed.json`` and propagates; with several ranks, every rank ends within
    ``PeerFailureWatch``'s grace of the first failure.

    The preemption handlers are installed only once the trainer is built: a signal during
    start-up (building the corpus, allocating the model) has nothing to checkpoint and ends
    the process at once, as it would without kvideo.
    """
    _ensure_logging()
    signals.clear_request()
    refuse_planted_link(Path(run_dir), "run dir")  # every rank alike, before any write
    env = init_distributed(
        cfg.trainer.device,
        backend=cfg.trainer.backend,
        group_of_one=strategy_class(cfg.trainer.strategy).needs_process_group,
    )
    watch = PeerFailureWatch(env)
    lock = RunDirLock(run_dir) if env.is_main else contextlib.nullcontext()
    trainer: Trainer | None = None
    try:
        with lock:
            changes = check_resume(cfg, Path(run_dir))
            trainer = Trainer(cfg, Path(run_dir), env, config_changes=changes)
            trainer.peer_failure = watch.failure
            restore_handlers = signals.install_signal_handlers()
            try:
                return trainer.run()
            finally:
                restore_handlers()
                trainer.close()
    except BaseException as e:
        if trainer is None and isinstance(e, Exception):  # once running, ``Trainer.run`` says it
            RUN_LOG.error("could not start the run: %s", one_line(e))
        elif isinstance(e, KeyboardInterrupt):  # a second Ctrl-C: stop now, keep what is saved
            RUN_LOG.warning("interrupted: the last checkpoint is kept")
        # Before the teardown, which may itself wait on a peer: every rank ends within the
        # watch's deadline from here.
        watch.announce(one_line(e))
        raise
    finally:
        try:
            cleanup(env)
        finally:
            watch.stop()
