"""What a run tells people while it trains: log lines, the progress bar, metrics windows,
validation records, ``skipped.jsonl`` and the final metrics.

The files themselves are written by ``metrics.RunWriter`` (rank 0 only); this module decides
what goes into them and when. Several of its methods are collectives (they sum counts over
ranks), which their docstrings say: every rank must call them at the same points.

All trainer components log through ``RUN_LOG``, one logger for the run's story, named after
the module that drives the run, so ``train.log`` reads the same whichever component a line
comes from.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import torch

from kvideo.config import DataConfig, TrainerConfig
from kvideo.decode.errors import SKIP_REASONS
from kvideo.train.distributed import DistEnv, all_gather_objects, all_reduce_counts, all_reduce_sum
from kvideo.train.guards import SkipBudget, clear_failed, write_failed
from kvideo.train.metrics import FINAL_NAME, RunClock, RunWriter, SkipTracker, StepTimer
from kvideo.train.sources import SourceTally, source_counts

RUN_LOG = logging.getLogger("kvideo.train.loop")


def file_only_logger() -> logging.Logger:
    """A logger writing to the run's log files alone (the root logger's file handlers, Hydra's
    ``train.log``): with a progress bar on the terminal, what the bar shows still reaches the
    file, so ``tail -f train.log`` from another shell shows the same progress a pipe would."""
    files = logging.getLogger("kvideo.train.file")
    files.propagate = False
    files.setLevel(logging.INFO)
    files.handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return files


class Reporter:
    """Rank 0 writes and prints; every rank keeps its counts, which the collectives sum.

    Making one is a collective too (it gathers every rank's hostname for ``launches.jsonl``)."""

    def __init__(
        self,
        run_dir: Path,
        env: DistEnv,
        trainer: TrainerConfig,
        data: DataConfig,
        *,
        clock: RunClock,
        num_params: int,
        resumed_from: int | None,
        skipped: dict[str, int] | None,
        config_yaml: str,
        left_out: dict[str, int] | None = None,
    ) -> None:
        """``data``: the skip budget (``data.max_skip_fraction``) and the training sources of
        ``data.mixture`` (weight > 0), whose samples it counts (``SourceTally``)."""
        self.run_dir, self.env, self.clock = run_dir, env, clock
        self.max_steps = trainer.max_steps
        self.log_every = trainer.log_every
        self.num_params = num_params
        self.resumed_from = resumed_from
        reasons, mixture_counts = source_counts(skipped or {})
        self.skips = SkipTracker(reasons)
        sources = [source.name for source in data.mixture if source.weight > 0]
        self.sources = SourceTally(sources, env.device, mixture_counts)
        # Rows the dataset's listing left out (a WebVid video never downloaded): counted once.
        self.left_out = dict(left_out or {})
        self.skip_budget = SkipBudget(data.max_skip_fraction)
        self.writer = RunWriter(
            run_dir,
            enabled=env.is_main,
            resume_step=resumed_from,
            loggers=trainer.loggers,
            wandb_project=trainer.wandb_project,
        )
        self.writer.write_config(config_yaml)
        if env.is_main:  # before the collective below: no rank can fail in this attempt before it
            clear_failed(run_dir)
        # A collective: every rank's hostname, so launches.jsonl shows the nodes a run spans.
        rank_hosts = all_gather_objects(socket.gethostname(), env)
        self._rank_hosts = rank_hosts
        self.timer = StepTimer()
        self.window_skipped = 0  # skipped samples of this rank since the last log step
        self.last_window: dict[str, Any] = {}
        self.last_val: dict[str, Any] = {}
        self.bar: Any = None  # tqdm progress bar on a TTY (rank 0)
        self.file_log = RUN_LOG  # with a bar: the same lines, to the log files only

    # ------------------------------------------------------------------ lines

    def should_log(self, step: int) -> bool:
        """Whether ``step`` ends a log window: every ``trainer.log_every`` steps, and the last."""
        return step % self.log_every == 0 or step == self.max_steps

    def record_start(self, **notes: Any) -> None:
        """This start's line in ``launches.jsonl``, with ``notes`` on what it did besides."""
        self.writer.record_launch(
            resumed_from=self.resumed_from,
            world_size=self.env.world_size,
            rank_hosts=self._rank_hosts,
            **notes,
        )

    def info(self, msg: str, *args: Any) -> None:
        if self.env.is_main:
            RUN_LOG.info(msg, *args)

    def say(self, line: str, *, progress: bool = False) -> None:
        """A line for people (rank 0): through the bar when there is one, else the log.

        ``progress`` lines (``step N/M ...``) replace the bar's postfix instead of scrolling.
        """
        if not self.env.is_main:
            return
        if self.bar is not None:
            if progress:
                self.bar.set_postfix_str(line.split(" ", 2)[2])
            else:
                self.bar.write(line)
            self.file_log.info(line)  # train.log reads as it does without a terminal
        else:
            RUN_LOG.info(line)

    def validating(self, done: int, total: int) -> None:
        """Move the bar's postfix while validating (``done`` of ``total`` clips on this rank), so
        a long validation does not look like a hang. Without a bar (a pipe, a log file) it says
        nothing: the validation line follows."""
        if self.env.is_main and self.bar is not None:
            self.bar.set_postfix_str(f"validating {done}/{total} clips")

    def finished_run(self, step: int) -> dict[str, Any] | None:
        """The final metrics of a run that already completed in this run dir, else ``None``."""
        done = self.run_dir / FINAL_NAME
        if not done.exists():
            return None
        self.info("already complete at step %d (%s)", step, done)
        final: dict[str, Any] = json.loads(done.read_text())
        return final

    def start(
        self, step: int, *, device: torch.device, autocast_dtype: torch.dtype | None, trainable: int
    ) -> None:
        """Say what is about to train, then open the progress bar (rank 0 on a TTY), so the two
        never share a line. ``trainable``: the parameters that train at ``step``."""
        self.info(
            "training on %s (%s, world size %d) for %d steps from step %d: %s parameters, %s trainable",
            device,
            autocast_dtype or "fp32",
            self.env.world_size,
            self.max_steps,
            step,
            f"{self.num_params:,}",
            f"{trainable:,}",
        )
        if self.env.is_main and sys.stdout.isatty():
            from tqdm import tqdm

            sys.stderr.flush()
            self.bar = tqdm(total=self.max_steps, initial=step, desc="train", dynamic_ncols=True)
            self.file_log = file_only_logger()

    # ------------------------------------------------------------------ counts

    def count_skips(self, batch: dict[str, Any]) -> None:
        """Remember the batch's bad samples, by reason and by file."""
        self.skips.update(batch["skip_reason"], batch["path"])

    def count_sources(self, batch: dict[str, Any], out: dict[str, Any]) -> None:
        """Count a micro-batch for its mixture sources (``SourceTally``), after its forward."""
        self.sources.add(batch, out)

    def skip_counts(self) -> dict[str, int]:
        """This rank's skip counts, and its mixture sources' counts (what its checkpoint entry
        stores)."""
        return dict(self.skips.counts) | self.sources.counts()

    def record_step(
        self,
        *,
        step_s: float,
        wait_s: float,
        clips: int,
        tokens: Any,
        computed_tokens: Any,
        loss: Any,
        skipped: int,
    ) -> None:
        """Add one optimizer step to the current window and move the bar."""
        self.timer.add_step(
            step_s=step_s,
            wait_s=wait_s,
            clips=clips,
            tokens=tokens,
            computed_tokens=computed_tokens,
            loss=loss,
        )
        self.window_skipped += skipped
        if self.bar is not None:
            self.bar.update(1)

    def flush_skipped(self) -> dict[str, int]:
        """Hand new bad files to rank 0 for skipped.jsonl; returns the all-reduced counts
        (collectives: every rank calls this at the same points)."""
        counts = all_reduce_counts(self.skips.counts, list(SKIP_REASONS), self.env)
        pending = all_gather_objects(self.skips.take_pending(), self.env)
        self.writer.add_skipped(entry for rank_entries in pending for entry in rank_entries)
        return counts

    # ------------------------------------------------------------------ records

    def log_window(self, step: int, epoch: int, *, lr: float, grad_norm: Any) -> None:
        """A metrics line over the steps since the last one, and the skip-budget check
        (collectives: every rank calls this at the same steps)."""
        counts = self.flush_skipped()
        t = self.timer
        summed = all_reduce_sum(
            [
                float(t.loss_sum),
                float(t.tokens),
                float(t.clips),
                float(t.computed_tokens),
                float(self.window_skipped),
            ],
            self.env,
        )
        window = t.window(self.env.world_size, summed[:4])
        self.timer.reset()
        self.window_skipped = 0
        self.skip_budget.add(int(summed[2]), int(summed[4]), step=step, last=step == self.max_steps)
        skipped = {k: v for k, v in counts.items() if v}
        record: dict[str, Any] = {
            "step": step,
            "epoch": epoch,
            "loss": window["loss"],
            "lr": lr,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "tokens_per_s": window["tokens_per_s"],
            "clips_per_s": window["clips_per_s"],
            "token_efficiency": window["token_efficiency"],
            "data_wait_share": window["data_wait_share"],
            "skipped": skipped,
            "skipped_total": sum(counts.values()),
            **({"sources": self.sources.window(self.env)} if self.sources.names else {}),
        }
        self.last_window = record
        self.writer.log(record, tb_prefix="train")
        self.say(
            f"step {step}/{self.max_steps} epoch {epoch} loss {record['loss']:.4f} "
            f"lr {record['lr']:.2e} {record['clips_per_s']:.1f} clips/s "
            f"data wait {100 * record['data_wait_share']:.1f}% skipped {record['skipped_total']}",
            progress=True,
        )

    def log_validation(self, step: int, epoch: int, result: dict[str, Any]) -> None:
        """A validation record; the latest one also goes into the final metrics."""
        record = {"split": "validation", "step": step, "epoch": epoch, **result}
        self.writer.log(record, tb_prefix="val")
        accs = " ".join(f"{k}={v:.3f}" for k, v in result.items() if k.startswith("acc_"))
        self.say(f"validation step {step}: loss {result['val_loss']:.4f} {accs}")
        self.last_val = result

    def log_predictions(self, step: int, rows: list[dict[str, str]]) -> None:
        """Generated captions beside their references (rows with keys ``video``, ``reference``,
        ``generated``): appended to ``predictions_val.jsonl`` with ``step`` and shown in the
        trackers as a table. Rank 0 writes its ``rows``; other ranks' calls do nothing (not a
        collective: gather the rows on rank 0 first to show every rank's)."""
        self.writer.log_predictions(step, rows)

    def final_metrics(self, status: str, step: int, epoch: int) -> dict[str, Any]:
        """What ``train()`` returns and ``final.json`` holds (a collective: the skip counts)."""
        counts = self.flush_skipped()
        t = self.timer
        secs = max(t.total_step_s, 1e-9)
        return {
            "status": status,
            "step": step,
            "max_steps": self.max_steps,
            "epoch": epoch,
            "train_loss": self.last_window.get("loss"),
            **({"sources": self.last_window["sources"]} if "sources" in self.last_window else {}),
            **self.last_val,
            "skipped": {k: v for k, v in counts.items() if v},
            "skipped_total": sum(counts.values()),
            **({"left_out": self.left_out} if self.left_out else {}),
            "wall_time_s": self.clock.wall_time(),
            "session_wall_time_s": self.clock.session_time(),
            "data_wait_share": t.total_wait_s / secs if t.total_step_s else None,
            "clips_per_s": t.total_clips * self.env.world_size / secs if t.total_step_s else None,
            "token_efficiency": t.total_tokens / t.total_computed if t.total_computed else None,
            "world_size": self.env.world_size,
            "num_params": self.num_params,
            "resumed_from": self.resumed_from,
            "run_dir": str(self.run_dir),
        }

    def completed(self, final: dict[str, Any]) -> None:
        """Write ``final.json`` (what marks the run dir as done) and say so."""
        self.writer.write_final(final)
        self.say(
            f"done: step {final['step']} val_loss {final.get('val_loss')} "
            f"wall {final['wall_time_s']:.1f}s -> {self.run_dir}"
        )

    def failed(self, error: str, step: int, **details: Any) -> None:
        """Say why the run failed, on this rank (the one that failed may not be rank 0), in the
        log (``train.log`` under Hydra, and the console), and leave ``failed.json`` for the sweep
        report unless a rank that failed first wrote it. ``details`` as ``write_failed``'s."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        where = f" on rank {self.env.rank}" if self.env.distributed else ""
        RUN_LOG.error("failed at step %d%s: %s", step, where, error)
        if self.env.distributed:
            details["rank"] = self.env.rank
        write_failed(self.run_dir, error, step, **details)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
