"""The training loop: ``train(cfg, run_dir) -> final metrics``.

One optimizer step = ``trainer.grad_accum`` micro-batches of ``trainer.batch_size`` clips
*per process*, so the effective batch is ``batch_size * grad_accum * world_size``.

``Trainer`` wires the components and runs the algorithm; each concern is a component in its
own module:

* ``distributed`` / ``fsdp``: the process group, and DDP or FSDP2 around the model
  (``trainer.strategy``);
* ``optim.ScheduledOptimizer``: AdamW, the lr schedule, gradient clipping;
* ``stream.EpochStream``: this rank's batches, epoch after epoch, resumable at any sample;
* ``checkpointer.Checkpointer``: what a checkpoint holds (world-size conversion, per-rank RNG;
  a single file under ddp, a sharded DCP folder under fsdp);
* ``validator.Validator``: the validation split, built once, and ``evaluate``;
* ``report.Reporter``: log lines, the progress bar, metrics windows, skipped files, final metrics.

Resume is exact: the checkpoint restores the data position, the model/optimizer/scheduler
states and every rank's RNG states, and nothing that runs between steps (opening a loader,
validating) draws from the global RNG, so the restarted run computes the same steps.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from omegaconf import OmegaConf

from kvideo.config import KVideoConfig
from kvideo.config.checks import require_caption_room
from kvideo.data.batch import optional_inputs
from kvideo.errors import one_line
from kvideo.preflight.memory import check_fits_on_gpu
from kvideo.train import signals
from kvideo.train.checkpoint import restore_rng_state
from kvideo.train.checkpointer import Checkpointer
from kvideo.train.distributed import DistEnv, any_ranks, cleanup, init_distributed, wrap_model
from kvideo.train.failure import PeerFailureWatch, StepBoundary, capture_boundary, weights_finite
from kvideo.train.freeze import TrainableSchedule
from kvideo.train.fsdp import shard_model, sync_gradients
from kvideo.train.guards import RunDirLock, RunFailed
from kvideo.train.loggers import require_installed
from kvideo.train.metrics import RunClock, now
from kvideo.train.optim import ScheduledOptimizer, param_groups
from kvideo.train.precision import Autocast
from kvideo.train.report import RUN_LOG, Reporter
from kvideo.train.stream import EpochStream
from kvideo.train.validator import Validator

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

# ``param_groups`` is part of this module's interface (tests build their optimizers with it).
__all__ = ["Trainer", "param_groups", "train"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    env = init_distributed(
        cfg.trainer.device, backend=cfg.trainer.backend, group_of_one=cfg.trainer.strategy == "fsdp"
    )
    watch = PeerFailureWatch(env)
    lock = RunDirLock(run_dir) if env.is_main else contextlib.nullcontext()
    trainer: Trainer | None = None
    try:
        with lock:
            trainer = Trainer(cfg, Path(run_dir), env)
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


@dataclass(frozen=True)
class StepOutcome:
    """What one optimizer step tells the loop."""

    lr: float
    grad_norm: torch.Tensor


class Trainer:
    """One training process: builds the components (``__init__``), then ``run()``.

    Resuming from the checkpoint is part of building, not of ``run()``: the metrics files
    are truncated to the resume step when the reporter opens them, DDP broadcasts rank 0's
    weights when it wraps the model (FSDP shards the model before the optimizer and the
    checkpoint see it: every rank builds the same seeded or pretrained weights and keeps its
    shard), and the restored RNG states must be the last thing set before the first step. A
    signal while building still ends the process at once (``train`` installs the handlers
    after it): nothing has trained yet that a checkpoint could keep.
    """

    ddp: DistributedDataParallel | None
    model: Any  # the raw model, or DDP / torch.compile around it: called like the model

    def __init__(self, cfg: KVideoConfig, run_dir: Path, env: DistEnv) -> None:
        from kvideo.data.loader import build_dataset
        from kvideo.data.tokenizer import build_tokenizer
        from kvideo.model import parameter_summary
        from kvideo.model.spec import build_model, model_spec

        self.cfg, self.config = cfg, cfg.trainer
        require_installed(self.config.loggers)  # a missing wandb fails now, not after the data is built
        self.run_dir, self.env, self.device = run_dir, env, env.device
        self.sharded = self.config.strategy == "fsdp"
        self.spec = model_spec(cfg.model.family)
        self.tokens_per_frame = cfg.model.tokens_per_frame
        clock = RunClock()
        self.autocast = Autocast(self.config.precision, self.device)

        # Same initial weights whatever the world size; then one data/dropout stream per rank.
        seed_everything(self.config.seed)
        self.tokenizer = build_tokenizer(cfg.data, cfg.model)
        require_caption_room(
            len(self.tokenizer.context_ids(cfg.video.prompt)), cfg.model.max_text_len, self.tokenizer.name
        )
        if self.device.type == "cuda":  # compose time cannot ask the GPU (no torch there)
            check_fits_on_gpu(
                cfg,
                total_bytes=torch.cuda.mem_get_info(self.device)[1],
                bf16=self.autocast.dtype == torch.bfloat16,
                vocab_size=self.tokenizer.vocab_size,
                device=str(self.device),
                shards=env.world_size if self.sharded else 1,
            )
        # Before anything is written to the run dir: a wrong data_root or blocklist must
        # fail without leaving a half-started run behind.
        # GPU decoding must use the trainer's device, which is not always cuda:local_rank
        # (one visible GPU per task under --gpus-per-task makes every rank's device cuda:0).
        decode_gpu = self.device.index if self.device.type == "cuda" else env.local_rank
        train_set = build_dataset(cfg, split=cfg.video.split, tokenizer=self.tokenizer, local_rank=decode_gpu)
        self.raw_model = build_model(
            cfg.model,
            vocab_size=self.tokenizer.vocab_size,
            max_frames=cfg.video.max_frames,
            frame_size=cfg.video.frame_size,
            resize=cfg.video.resize,
        ).to(self.device)
        num_params = sum(p.numel() for p in self.raw_model.parameters())
        if self.sharded:  # before anything holds the parameters: they become shards
            said = shard_model(
                self.raw_model,
                env,
                units=self.spec.fsdp_units(self.raw_model),
                compute_dtype=self.autocast.dtype,
                cpu_offload=self.config.fsdp_cpu_offload,
            )
            if env.is_main:
                RUN_LOG.info(said)
        seed_everything(self.config.seed + env.rank)

        # What trains when (model.freeze / freeze_schedule / LoRA): the optimizer and the
        # checkpoints cover every parameter that trains at some step.
        self.trainable = TrainableSchedule(self.raw_model, cfg.model)
        model_cfg = cfg.model
        own_lrs = any(model_cfg.part_lr(part, 0.0) for part in self.spec.parts)
        self.optimizer = ScheduledOptimizer(
            self.raw_model,
            self.config,
            fused=self.device.type == "cuda" and not self.config.fsdp_cpu_offload,
            include=self.trainable.ever(),
            lr_of_part=(lambda part: model_cfg.part_lr(part, self.config.lr)) if own_lrs else None,
        )
        self.stream = EpochStream(train_set, cfg, env)
        self.checkpointer = Checkpointer(
            run_dir,
            env,
            model=self.raw_model,
            optimizer=self.optimizer,
            clock=clock,
            saved_weights=self.spec.checkpoint_keys(self.raw_model, self.trainable.ever()),
            sharded=self.sharded,
            async_save=self.config.ckpt_async,
        )
        resume = self.checkpointer.load()
        self.step = 0 if resume is None else resume.step
        self.trainable.apply(self.step)
        if resume is not None:
            self.stream.resume_at(resume.position)
        self.report = Reporter(
            run_dir,
            env,
            self.config,
            max_skip_fraction=cfg.data.max_skip_fraction,
            clock=clock,
            num_params=num_params,
            resumed_from=None if resume is None else resume.step,
            skipped=None if resume is None else resume.skipped,
            config_yaml=OmegaConf.to_yaml(OmegaConf.structured(cfg)),
            left_out=train_set.left_out,
        )
        if train_set.left_out:
            counts = ", ".join(f"{n:,} {reason}" for reason, n in train_set.left_out.items())
            self.report.say(f"the dataset listing left out {counts} rows (counted once, never read)")

        self._wrap_model()
        self.report.info(parameter_summary(self.raw_model))
        self.validator = Validator(
            cfg, env, tokenizer=self.tokenizer, decode_gpu=decode_gpu, autocast=self.autocast
        )
        # Last: nothing after this may draw from the restored RNG streams.
        if resume is not None and resume.rng is not None:
            restore_rng_state(resume.rng)
        self.boundary: StepBoundary | None = self._boundary()
        # Another rank's announced failure, if any (``train`` connects its PeerFailureWatch).
        self.peer_failure: Callable[[], str | None] = lambda: None

    def close(self) -> None:
        """Before the process group goes: wait for a checkpoint still being written in the
        background, then drop the DDP wrapper (``release_model``)."""
        try:
            self.checkpointer.close()
        finally:
            self.release_model()

    def release_model(self) -> None:
        """Drop the DDP wrapper before the process group goes: DDP's reducer holds the group,
        and a gloo group destroyed last by the reducer's destructor can wait forever on its
        worker threads (seen as a rank that never exits after a completed run)."""
        self.ddp = None
        self.model = self.raw_model
        gc.collect()

    def _wrap_model(self) -> None:
        """DDP (and ``torch.compile``) around the raw model, for the current trainable set: DDP
        registers its gradient hooks on the parameters that require grad when it is built. A
        sharded model is already wrapped (in place) and reads ``requires_grad`` at every
        forward."""
        model = self.raw_model if self.sharded else wrap_model(self.raw_model, self.env)
        # wrap_model returns a DistributedDataParallel exactly when env.distributed
        ddp = self.env.distributed and not self.sharded
        self.ddp = cast("DistributedDataParallel", model) if ddp else None
        self.model = torch.compile(model) if self.config.compile else model

    # ------------------------------------------------------------------ the algorithm

    def run(self) -> dict[str, Any]:
        """Train to ``trainer.max_steps`` (or until preempted); returns the final metrics."""
        if self.step >= self.config.max_steps:
            finished = self.report.finished_run(self.step)
            if finished is not None:
                self.report.close()
                return finished
        self.report.start(self.step, device=self.device, autocast_dtype=self.autocast.dtype)
        try:
            status = self._train_until_done_or_preempted()
            if status == "completed":
                self.stream.close()  # release loader workers before validation
                # The final checkpoint comes before anything after training that could fail: a
                # crash in the final validation or the export then costs no step.
                self.checkpoint(wait=True)
                self.validate()
                self.export()
            final = self.report.final_metrics(status, self.step, self.stream.epoch)
            if status == "completed":
                self.report.completed(final)
            else:
                final["exit_code"] = signals.EXIT_PREEMPTED
            return final
        except RunFailed as e:
            # The loop's own verdicts (a non-finite loss, a skip budget spent, a full disk): the
            # last checkpoint stays the one to resume from.
            self.stream.close()
            self.report.failed(str(e), self.step)
            raise
        except Exception as e:
            self.stream.close()
            saved = self.checkpoint_after_crash()
            error = f"{type(e).__name__}: {one_line(e)}"
            peer = self.peer_failure()
            if peer is not None and not peer.startswith(f"rank {self.env.rank}:"):
                error = f"{error} (after {peer})"
            self.report.failed(
                error,
                self.step,
                checkpoint=saved,
                traceback=traceback.format_exc(),
            )
            raise
        finally:
            self.report.close()

    def _train_until_done_or_preempted(self) -> str:
        """The loop: step; log, validate and checkpoint when due; stop on preemption."""
        config = self.config
        while self.step < config.max_steps:
            outcome = self.train_step()
            log_step = self.step % config.log_every == 0 or self.step == config.max_steps
            if log_step:
                self.report.log_window(
                    self.step, self.stream.epoch, lr=outcome.lr, grad_norm=outcome.grad_norm
                )
            # The last step's validation is the final one, after the loader workers are gone.
            if config.val_every and self.step % config.val_every == 0 and self.step < config.max_steps:
                self.validate()
            if config.ckpt_every and self.step % config.ckpt_every == 0:
                self.checkpoint()
            if self.stop_requested(log_step):
                self.stream.close()
                self.checkpoint(wait=True)
                self.report.say(
                    f"preempted ({signals.request_reason() or 'another rank'}): "
                    f"checkpointed step {self.step}, exiting"
                )
                return "preempted"
        return "completed"

    # ------------------------------------------------------------------ one call per concern

    def train_step(self) -> StepOutcome:
        """One optimizer step over ``grad_accum`` micro-batches."""
        self.enter_freeze_stage()
        grad_accum = self.config.grad_accum
        t_start = now()
        wait = 0.0
        clips = 0
        skipped = 0
        tokens = torch.zeros((), dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        pad_id = getattr(self.tokenizer, "pad_id", None)
        for micro in range(grad_accum):
            t0 = now()
            batch = self.stream.next_batch()
            wait += now() - t0
            self.report.count_skips(batch)
            last = micro == grad_accum - 1
            # Gradients are all-reduced (FSDP: reduce-scattered) once per step, on its last micro-batch.
            if self.sharded:
                sync_gradients(self.raw_model, last)
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    out = self.model(
                        batch["frames"],
                        batch["frame_mask"],
                        batch["input_ids"],
                        batch["labels"],
                        frame_times=batch["frame_times"],
                        **optional_inputs(batch),
                    )
                loss = out["loss"] / grad_accum
                loss.backward()
            loss_sum += loss.detach().float()
            clips += len(batch["skip_reason"])
            skipped += sum(1 for reason in batch["skip_reason"] if reason)
            text = batch["input_ids"] != pad_id if pad_id is not None else torch.ones_like(batch["input_ids"])
            tokens += batch["frame_mask"].sum() * self.tokens_per_frame + text.sum()
        # A non-finite loss on any rank makes the gradient norm non-finite on every rank (its
        # gradients reach them all through the all-reduce / reduce-scatter), so every rank
        # takes the same decision without a collective of its own.
        grad_norm = self.optimizer.gradient_norm()
        if not bool(torch.isfinite(grad_norm)):
            self.optimizer.discard_gradients()
            raise RunFailed(
                f"non-finite loss or gradient (loss {float(loss_sum)} on rank {self.env.rank}, gradient norm "
                f"{float(grad_norm)}) at step {self.step + 1}: weights not updated, last checkpoint kept; "
                f"lower trainer.lr (now {self.config.lr:g}) or use trainer.grad_clip / trainer.precision=fp32"
            )
        self.boundary = None  # the weights are changing: no consistent state until the step is whole
        lr = self.optimizer.apply_gradients(grad_norm)
        self.step += 1
        self.boundary = self._boundary()
        self.report.record_step(
            step_s=now() - t_start, wait_s=wait, clips=clips, tokens=tokens, loss=loss_sum, skipped=skipped
        )
        return StepOutcome(lr=lr, grad_norm=grad_norm)

    def stop_requested(self, log_step: bool) -> bool:
        """Whether to checkpoint and stop after this step (a preemption signal, see ``signals``).

        A signal may reach one rank only, or the ranks during different steps, and they must
        stop after the same one: they agree through an all-reduce of the flag. That happens at
        log steps only (``log_step``, where ``log_window`` runs its collectives anyway): per
        step it would add a collective, and under NCCL a wait for the GPU to catch up, to every
        step of every run, for an event that comes once. The delay is safe because the handler
        only sets a flag and nothing is lost while it waits: the steps in between train
        normally and the checkpoint covers them. What it costs is time, at most
        ``trainer.log_every - 1`` steps: SLURM sends SIGTERM ``KillWait`` (30 s by default)
        before SIGKILL and submitit its USR2 90 s before the time limit, so keep ``log_every``
        times the step time plus one checkpoint write under those (the default 20 steps at
        ~0.3 s on the CPU take 6 s). One process needs no agreement and checks every step.
        """
        if not self.env.distributed:
            return signals.checkpoint_requested()
        if not log_step:
            return False
        return any_ranks([signals.checkpoint_requested()], self.env)[0]

    def enter_freeze_stage(self) -> None:
        """Switch the trainable set when this step starts a ``model.freeze_schedule`` stage (every
        rank at the same step: the schedule is a function of the step)."""
        if not self.trainable.apply(self.step):
            return
        self._wrap_model()
        trained = sum(p.numel() for p in self.raw_model.parameters() if p.requires_grad)
        self.report.say(
            f"step {self.step}: freeze stage {self.trainable.stage_index(self.step)} starts, "
            f"{trained:,} parameters train"
        )

    def validate(self) -> None:
        """Validate the current weights and record the numbers (a collective: on a sharded
        model every forward is one, and every rank runs the same ones)."""
        result = self.validator.validate(self.raw_model)
        if result:
            predictions = self.validator.predictions(self.raw_model)
            result.update(self.validator.answer_metrics(predictions))
            self.report.log_validation(self.step, self.stream.epoch, result)
            self.report.log_predictions(self.step, predictions)

    def export(self) -> None:
        """The final weights in Hugging Face formats, in ``<run_dir>/export`` (rank 0; see
        ``kvideo.model.export``), so the result loads outside kvideo. A sharded model's
        whole weights exist on no rank: rank 0 rebuilds the model on the CPU from the final
        checkpoint, as ``python -m kvideo.export`` does."""
        if not (self.config.export_at_end and self.env.is_main):
            return
        from kvideo.model.export import export_model

        out = self.run_dir / "export"
        if self.sharded:
            from kvideo.train.restore import export_trained, load_trained

            export_trained(load_trained(self.run_dir, device="cpu"), out)
        else:
            export_model(
                self.raw_model, self.cfg, self.tokenizer, out, step=self.step, trained=self.trainable.ever()
            )
        self.report.info("exported step %d -> %s", self.step, out)

    def _boundary(self) -> StepBoundary:
        return capture_boundary(self.step, self.stream.position, self.report.skip_counts())

    def checkpoint_after_crash(self) -> dict[str, Any]:
        """After an unexpected error, checkpoint the last step boundary, as preemption would
        have, when that is possible: one process (with several, a checkpoint is a collective
        and the other ranks are elsewhere: the last periodic one is kept), the error not inside
        the weight update, and finite weights. Returns what ``failed.json`` records of it."""
        boundary, kept = self.boundary, self.checkpointer.saved_step
        why_not = None
        if self.env.distributed:
            why_not = "several ranks: a checkpoint needs all of them"
        elif boundary is None:
            why_not = "the error came during the weight update"
        elif self.checkpointer.holds(boundary.step):
            return {"step": boundary.step, "written_after_failure": False}
        elif not weights_finite(self.raw_model):
            why_not = "the weights are not finite"
        if why_not is None and boundary is not None:
            try:
                self.report.flush_skipped()
                self.checkpointer.save(
                    boundary.step, boundary.position, boundary.skipped, wait=True, rng=boundary.rng
                )
            except Exception as e:
                why_not = f"the save failed: {one_line(e)}"
            else:
                self.report.say(f"checkpointed step {boundary.step} after the failure")
                return {"step": boundary.step, "written_after_failure": True}
        RUN_LOG.warning(
            "no checkpoint written after the failure (%s); the last one is step %s", why_not, kept
        )
        return {"step": kept if kept >= 0 else None, "written_after_failure": False, "why_not": why_not}

    def checkpoint(self, *, wait: bool = False) -> None:
        """Checkpoint the current step unless it already is (a collective: every rank calls it).
        ``wait``: return once it is on disk, also when checkpoints are written in the background."""
        if self.checkpointer.holds(self.step):
            if wait:
                self.checkpointer.wait()
            return
        # skipped.jsonl first: a run resumed from this checkpoint starts after the bad files
        # met so far and would never list the ones still pending.
        self.report.flush_skipped()
        self.checkpointer.save(self.step, self.stream.position, self.report.skip_counts(), wait=wait)
