"""Everything the trainer writes besides checkpoints: ``metrics.jsonl``, ``skipped.jsonl``,
``predictions_val.jsonl``, ``config.yaml`` and ``final.json``, mirrored to the experiment
trackers of ``trainer.loggers`` (``kvideo.train.loggers``: TensorBoard events in ``tb/``, W&B),
plus the step-time bookkeeping behind the throughput and data-wait numbers.

Only rank 0 writes (``enabled=False`` elsewhere turns every method into a no-op), so the
loop does not need ``if is_main`` around each call.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kvideo.files import open_append, write_text_atomic

# read_jsonl and TB_DIRNAME are re-exported (``as``): callers have always found them here.
from kvideo.files import read_jsonl as read_jsonl
from kvideo.train.loggers import PREDICTION_COLUMNS, ExperimentLogger, open_loggers
from kvideo.train.loggers import TB_DIRNAME as TB_DIRNAME

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
SKIPPED_NAME = "skipped.jsonl"
FINAL_NAME = "final.json"
CONFIG_NAME = "config.yaml"
LAUNCHES_NAME = "launches.jsonl"
PREDICTIONS_NAME = "predictions_val.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None (json.dumps would emit invalid JSON), tensors -> floats."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys, NaN/inf as null (``_clean``), written whole."""
    write_text_atomic(path, json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")


def _rewrite_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool] | None) -> list[dict[str, Any]]:
    """Keep the records ``keep`` accepts (all when ``None``) and repair a torn last line, so
    later appends start on a fresh line. Returns the kept records."""
    if not path.exists():
        return []
    records = read_jsonl(path)
    kept = records if keep is None else [r for r in records if keep(r)]
    raw = path.read_bytes()
    if len(kept) == len(records) and (not raw or raw.endswith(b"\n")) and raw.count(b"\n") == len(records):
        return kept
    if len(kept) < len(records):
        log.info("dropping %d lines of %s past the resume point", len(records) - len(kept), path.name)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


class StepTimer:
    """Wall time of training steps and the part of it spent blocked on the data loader.

    Only the time inside steps counts (validation and checkpoint writes are excluded), so
    ``data_wait_share`` answers "is the loader keeping up with the model?".
    """

    def __init__(self) -> None:
        self.reset()
        self.total_step_s = 0.0
        self.total_wait_s = 0.0
        self.total_clips = 0
        self.total_tokens = 0.0  # over every rank and the windows read so far: token_efficiency
        self.total_computed = 0.0

    def reset(self) -> None:
        self.step_s = 0.0
        self.wait_s = 0.0
        self.clips = 0
        self.tokens: Any = 0
        self.computed_tokens: Any = 0
        self.loss_sum = 0.0
        self.steps = 0

    def add_step(
        self, *, step_s: float, wait_s: float, clips: int, tokens: Any, computed_tokens: Any, loss: float
    ) -> None:
        """One step; ``tokens`` / ``computed_tokens`` may be device tensors (summed without a
        sync until the window is read)."""
        self.step_s += step_s
        self.wait_s += wait_s
        self.clips += clips
        self.tokens += tokens
        self.computed_tokens += computed_tokens
        self.loss_sum += loss
        self.steps += 1
        self.total_step_s += step_s
        self.total_wait_s += wait_s
        self.total_clips += clips

    def window(self, world_size: int, summed: Sequence[float] | None = None) -> dict[str, float]:
        """Mean loss and rates over the steps since the last ``reset``.

        ``summed`` is this window's ``(loss_sum, tokens, clips, computed_tokens)`` added over all
        ranks, so the loss is the mean over every rank's batches, not rank 0's alone; without it
        this rank's numbers stand for every rank (same batch shape everywhere).
        ``token_efficiency`` is the share of the token slots the model computed that held real
        tokens (1.0 packed without row padding).
        """
        if summed is None:
            summed = tuple(
                float(v) * world_size for v in (self.loss_sum, self.tokens, self.clips, self.computed_tokens)
            )
        loss_sum, tokens, clips, computed = (float(v) for v in summed)
        self.total_tokens += tokens
        self.total_computed += computed
        secs = max(self.step_s, 1e-9)
        return {
            "loss": loss_sum / max(self.steps * world_size, 1),
            "tokens_per_s": tokens / secs,
            "clips_per_s": clips / secs,
            "data_wait_share": self.wait_s / secs,
            "token_efficiency": tokens / computed if computed else float("nan"),
        }


class SkipTracker:
    """Counts bad samples per reason and remembers which files are new since the last flush.

    ``counts`` are this rank's occurrences (a bad file met every epoch counts every time);
    the report all-reduces them. ``pending`` holds (path, reason) pairs not yet handed to
    rank 0 for ``skipped.jsonl``.
    """

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts: Counter[str] = Counter(counts or {})
        self.pending: dict[str, str] = {}

    def update(self, reasons: Iterable[str], paths: Iterable[str]) -> None:
        for reason, path in zip(reasons, paths, strict=True):
            if reason:
                self.counts[reason] += 1
                self.pending.setdefault(path, reason)

    def take_pending(self) -> list[tuple[str, str]]:
        out = list(self.pending.items())
        self.pending.clear()
        return out


def tracker_scalars(record: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numbers of a metrics record as tracker tags: ``{"loss": 2.1, "skipped": {"empty": 1}}``
    with prefix ``train`` becomes ``{"train/loss": 2.1, "train/skipped/empty": 1}``, nested
    records too (``sources``: ``train/sources/<name>/loss``). ``step`` and ``split`` say where
    the record belongs and are not values; ``None`` (NaN, see ``_clean``) has no point to plot."""
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "split"):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            scalars[f"{prefix}/{key}"] = value
        elif isinstance(value, Mapping):
            scalars.update(tracker_scalars(value, f"{prefix}/{key}"))
    return scalars


class RunWriter:
    """Rank 0's files in the run directory and its experiment trackers. Construct with
    ``enabled=False`` on other ranks.

    ``loggers`` names the trackers (``trainer.loggers``: ``tensorboard``, ``wandb``) every
    record is mirrored to; ``wandb_project`` is the W&B project (``trainer.wandb_project``).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        resume_step: int | None = None,
        loggers: Sequence[str] = ("tensorboard",),
        wandb_project: str = "kvideo",
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.start_step = 0 if resume_step is None else resume_step
        self._loggers: list[ExperimentLogger] = []
        self._closed = False
        self._skipped_seen: set[str] = set()
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_NAME
        self.skipped_path = self.run_dir / SKIPPED_NAME
        self.predictions_path = self.run_dir / PREDICTIONS_NAME
        # A resumed run re-does the steps after its checkpoint; drop their old lines so the
        # file reads as one consistent history (the same steps logged twice would disagree
        # about wall-clock rates and confuse plots). No checkpoint = start over from step 0.
        for path in (self.metrics_path, self.predictions_path):
            _rewrite_jsonl(path, lambda r: int(r.get("step", 0)) <= self.start_step)
        # The dedupe set survives restarts: a file skipped before the preemption is not
        # listed again when the resumed run meets it in the next epoch.
        self._skipped_seen = {r["path"] for r in _rewrite_jsonl(self.skipped_path, None) if "path" in r}
        self._loggers = open_loggers(
            loggers, self.run_dir, resume_step=resume_step, wandb_project=wandb_project
        )

    def write_config(self, yaml_text: str) -> None:
        """The resolved config, to ``config.yaml`` and every tracker (TensorBoard hparams and
        text, W&B config); a resumed run whose config differs says so (its checkpoint was
        trained under the old one) and the file then shows the current one."""
        if not self.enabled:
            return
        path = self.run_dir / CONFIG_NAME
        if path.exists() and path.read_text() != yaml_text:
            log.warning("%s differs from this run's config: the run continues under the new one", path)
        write_text_atomic(path, yaml_text)
        config = yaml.safe_load(yaml_text) or {}
        for logger in self._open_loggers():
            logger.log_config(config, yaml_text, self.start_step)

    def log(self, record: dict[str, Any], *, tb_prefix: str) -> None:
        """Append one line to metrics.jsonl and mirror its numbers to the trackers, under
        ``tb_prefix/`` (``train``, ``val``)."""
        if not self.enabled:
            return
        record = _clean(record)
        with open_append(self.metrics_path) as f:
            f.write(json.dumps(record) + "\n")
        scalars = tracker_scalars(record, tb_prefix)
        for logger in self._open_loggers():
            logger.log_scalars(scalars, int(record["step"]))

    def log_predictions(self, step: int, rows: Sequence[Mapping[str, str]]) -> None:
        """Append generated captions beside their references to ``predictions_val.jsonl`` (one
        line per row, with ``step``) and show them in the trackers (a table)."""
        if not self.enabled:
            return
        for row in rows:
            missing = [c for c in PREDICTION_COLUMNS if c not in row]
            if missing:
                raise ValueError(f"prediction row without {missing}: rows need {list(PREDICTION_COLUMNS)}")
        with open_append(self.predictions_path) as f:
            f.writelines(json.dumps({"step": step, **row}) + "\n" for row in rows)
        for logger in self._open_loggers():
            logger.log_predictions(rows, step)

    def add_skipped(self, entries: Iterable[tuple[str, str]]) -> int:
        """Append files not listed yet to skipped.jsonl; returns how many were new."""
        if not self.enabled:
            return 0
        new = []
        for path, reason in entries:
            if path not in self._skipped_seen:
                self._skipped_seen.add(path)
                new.append({"path": path, "reason": reason})
        if new:
            with open_append(self.skipped_path) as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
        return len(new)

    def record_launch(
        self,
        *,
        resumed_from: int | None,
        world_size: int,
        rank_hosts: Sequence[str] | None = None,
        **notes: Any,
    ) -> None:
        """Append who started this run and from where to ``launches.jsonl``.

        One line per start (first launch, every resume, every SLURM requeue), so a run dir
        tells which scheduler job trained which steps. ``host`` is rank 0's; ``rank_hosts``
        (one hostname per rank, in rank order) says which nodes a multi-node run spanned.
        ``notes``: what else this start did (``config_changes`` of a forced resume,
        ``initialized_from``).
        """
        if not self.enabled:
            return
        env = os.environ
        record = {
            "time": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "resumed_from": resumed_from,
            "world_size": world_size,
            "rank_hosts": list(rank_hosts) if rank_hosts is not None else [socket.gethostname()],
            "slurm_job_id": env.get("SLURM_JOB_ID"),
            "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
            "slurm_restart_count": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
            **notes,
        }
        with open_append(self.run_dir / LAUNCHES_NAME) as f:
            f.write(json.dumps(record) + "\n")

    def write_final(self, final: dict[str, Any]) -> None:
        """``final.json``, and the final metrics to the trackers."""
        if not self.enabled:
            return
        write_json_atomic(self.run_dir / FINAL_NAME, final)
        for logger in self._open_loggers():
            logger.log_final(_clean(final), int(final["step"]))

    def close(self) -> None:
        loggers, self._loggers = self._loggers, []
        self._closed = True
        for logger in loggers:
            logger.close()

    def _open_loggers(self) -> list[ExperimentLogger]:
        assert not self._closed, "RunWriter used after close()"
        return self._loggers


class RunClock:
    """Wall time of the whole run across restarts: what earlier sessions spent (from the
    checkpoint) plus this session, which starts when the clock is made."""

    def __init__(self) -> None:
        self.session_start = time.time()
        self.prior_wall_s = 0.0

    def session_time(self) -> float:
        return time.time() - self.session_start

    def wall_time(self) -> float:
        return self.prior_wall_s + self.session_time()


def now() -> float:
    return time.perf_counter()
