"""The training loop: ``Trainer`` builds the components of one training process and runs them.

One optimizer step = ``trainer.grad_accum`` micro-batches of ``trainer.batch_size`` clips
*per process*, so the effective batch is ``batch_size * grad_accum * world_size``.

``Trainer`` wires the components and runs the algorithm; each concern is a component in its
own module:

* ``distributed``: the process group; ``parallel``: the strategy (``trainer.strategy``: DDP or
  FSDP2), which wraps the model, synchronises gradients and picks the checkpoint format;
* ``optim.ScheduledOptimizer``: AdamW, the lr schedule, gradient clipping;
* ``stream.EpochStream``: this rank's batches, epoch after epoch, resumable at any sample;
* ``checkpointer.Checkpointer``: what a checkpoint holds (world-size conversion, per-rank RNG),
  in the strategy's format;
* ``validator.Validator``: the validation split, built once, and ``evaluate``;
* ``report.Reporter``: log lines, the progress bar, metrics windows, skipped files, final metrics.

Resume is exact: the checkpoint restores the data position, the model/optimizer/scheduler
states and every rank's RNG states, and nothing that runs between steps (opening a loader,
validating) draws from the global RNG, so the restarted run computes the same steps.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kvideo.config import KVideoConfig
from kvideo.data.batch import forward_inputs
from kvideo.data.settings import ClipSettings
from kvideo.errors import one_line
from kvideo.train import components, signals
from kvideo.train.best import BestKeeper
from kvideo.train.checkpoint import restore_rng_state
from kvideo.train.distributed import DistEnv
from kvideo.train.failure import StepBoundary, capture_boundary, checkpoint_after_crash
from kvideo.train.freeze import TrainableSchedule, unreached_stages
from kvideo.train.guards import RunFailed
from kvideo.train.loggers import require_installed
from kvideo.train.metrics import RunClock
from kvideo.train.optim import param_groups
from kvideo.train.parallel import strategy_class
from kvideo.train.precision import Autocast
from kvideo.train.report import RUN_LOG
from kvideo.train.step_tally import StepOutcome, StepTally
from kvideo.train.stream import EpochStream
from kvideo.train.validator import Validator

# ``param_groups`` is part of this module's interface (tests build their optimizers with it).
__all__ = ["Trainer", "param_groups"]


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

    model: Any  # the raw model, or the strategy's wrapper / torch.compile around it

    def __init__(
        self,
        cfg: KVideoConfig,
        run_dir: Path,
        env: DistEnv,
        *,
        config_changes: dict[str, list[Any]] | None = None,
    ) -> None:
        """``config_changes``: the identity keys a forced resume changed (``kvideo.train.resume``)."""
        from kvideo.data.loader import build_dataset
        from kvideo.model import parameter_summary
        from kvideo.model.spec import model_spec

        self.cfg, settings = cfg, cfg.trainer
        require_installed(settings.loggers)  # a missing wandb fails now, not after the data is built
        self.run_dir, self.env, self.device = run_dir, env, env.device
        self.strategy = strategy_class(settings.strategy)(env)
        self.spec = model_spec(cfg.model.family)
        self.autocast = Autocast(settings.precision, self.device)
        clock = RunClock()
        # Same initial weights whatever the world size; then one data/dropout stream per rank.
        components.seed_everything(settings.seed)
        self.tokenizer = components.tokenizer_with_room(cfg, self.device, self.autocast, self.strategy)
        # Before anything is written to the run dir: a wrong data_root or blocklist must fail
        # without leaving a half-started run behind.
        clips = ClipSettings.of(cfg)  # what the data code reads of the config
        train_set = build_dataset(
            clips, split=cfg.video.split, tokenizer=self.tokenizer, local_rank=self.decode_gpu
        )
        self.raw_model = self._build_model()
        num_params = sum(p.numel() for p in self.raw_model.parameters())
        self._prepare_model()
        components.seed_everything(settings.seed + env.rank)
        # What trains when (model.freeze / freeze_schedule / LoRA): the optimizer and the
        # checkpoints cover every parameter that trains at some step.
        self.trainable = TrainableSchedule(self.raw_model, cfg.model, part_of=self.spec.part_of)
        self.optimizer = components.optimizer_for(self.raw_model, cfg, self.spec, self.trainable, self.device)
        self.stream = EpochStream(train_set, env, batch_size=settings.batch_size)
        self.checkpointer = components.checkpointer_for(
            cfg,
            run_dir,
            env,
            self.raw_model,
            self.optimizer,
            clock,
            self.strategy,
            saved_weights=self.spec.checkpoint_keys(self.raw_model, self.trainable.ever()),
        )
        resume = self.checkpointer.load()
        launch = components.start_notes(self.raw_model, settings, resume, config_changes)
        self.step = 0 if resume is None else resume.step
        self.trainable.apply(self.step)
        if resume is not None:
            self.stream.resume_at(resume.position)
        self.report = components.reporter_for(
            cfg, run_dir, env, clock, num_params, resume, train_set.left_out, launch
        )
        self._wrap_model()
        self.report.info(parameter_summary(self.raw_model, self.spec.part_of))
        for line in unreached_stages(cfg.model, settings.max_steps):
            self.report.say(line)
        self.validator = Validator(
            cfg,
            env,
            clips,
            tokenizer=self.tokenizer,
            decode_gpu=self.decode_gpu,
            autocast=self.autocast,
            lockstep=self.strategy.lockstep_forwards,
        )
        self.best = BestKeeper.for_run(self.checkpointer.dir, settings)
        # Last: nothing after this may draw from the restored RNG streams.
        if resume is not None and resume.rng is not None:
            restore_rng_state(resume.rng)
        self.boundary: StepBoundary | None = self._boundary()
        # Another rank's announced failure, if any (``train`` connects its PeerFailureWatch).
        self.peer_failure: Callable[[], str | None] = lambda: None

    # ------------------------------------------------------------------ building, in order

    @property
    def decode_gpu(self) -> int:
        """The GPU a GPU decoder uses: the trainer's device, which is not always cuda:local_rank
        (one visible GPU per task under --gpus-per-task makes every rank's device cuda:0)."""
        return self.device.index if self.device.type == "cuda" else self.env.local_rank

    def _build_model(self) -> torch.nn.Module:
        from kvideo.model.spec import build_model

        video = self.cfg.video
        return build_model(
            self.cfg.model,
            vocab_size=self.tokenizer.vocab_size,
            max_frames=video.max_frames,
            frame_size=video.frame_size,
            resize=video.resize,
            max_tokens_per_row=self.cfg.data.packed_row_tokens,
        ).to(self.device)

    def _prepare_model(self) -> None:
        """The strategy's change in place, before anything holds the parameters (FSDP2: they
        become shards)."""
        said = self.strategy.prepare(
            self.raw_model,
            units=self.spec.fsdp_units(self.raw_model),
            compute_dtype=self.autocast.dtype,
            cpu_offload=self.cfg.trainer.fsdp_cpu_offload,
        )
        if said and self.env.is_main:
            RUN_LOG.info(said)

    def close(self) -> None:
        """Before the process group goes: wait for a checkpoint still being written in the
        background, then drop the strategy's wrapper (``release_model``)."""
        try:
            self.checkpointer.close()
        finally:
            self.release_model()

    def release_model(self) -> None:
        """Drop the strategy's wrapper before the process group goes (``Strategy.release``)."""
        self.strategy.release()
        self.model = self.raw_model
        gc.collect()

    def _wrap_model(self) -> None:
        """The strategy's wrapper (and ``torch.compile``) around the raw model, for the current
        trainable set."""
        model = self.strategy.wrap(self.raw_model)
        self.model = torch.compile(model) if self.cfg.trainer.compile else model

    # ------------------------------------------------------------------ the algorithm

    def run(self) -> dict[str, Any]:
        """Train to ``trainer.max_steps`` (or until preempted); returns the final metrics."""
        if self.step >= self.cfg.trainer.max_steps:
            finished = self.report.finished_run(self.step)
            if finished is not None:
                self.report.close()
                return finished
        trains = self.trainable.at(self.step)
        trainable = sum(p.numel() for n, p in self.raw_model.named_parameters() if n in trains)
        self.report.start(
            self.step, device=self.device, autocast_dtype=self.autocast.dtype, trainable=trainable
        )
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
            if self.best is not None:
                final["best"] = self.best.summary()
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
            self._fail(e)
            raise
        finally:
            self.report.close()

    def _train_until_done_or_preempted(self) -> str:
        """The loop: step; log, validate and checkpoint when due; stop on preemption."""
        while self.step < self.cfg.trainer.max_steps:
            outcome = self.train_step()
            log_step = self.report.should_log(self.step)
            if log_step:
                self.report.log_window(
                    self.step, self.stream.epoch, lr=outcome.lr, grad_norm=outcome.grad_norm
                )
            if self.validator.should_validate(self.step):
                self.validate()
            if self.checkpointer.should_save(self.step):
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
        grad_accum = self.cfg.trainer.grad_accum
        tally = StepTally(self.device)
        for micro in range(grad_accum):
            batch = tally.timed(self.stream.next_batch)
            self.report.count_skips(batch)
            # Gradients are all-reduced (FSDP: reduce-scattered) once per step, on its last micro-batch.
            with self.strategy.gradient_sync(micro == grad_accum - 1):
                with self.autocast():
                    out = self.model(
                        batch["frames"],
                        batch["frame_mask"],
                        batch["input_ids"],
                        batch["labels"],
                        frame_times=batch["frame_times"],
                        **forward_inputs(batch),
                    )
                loss = out["loss"] / grad_accum
                loss.backward()
            tally.add(batch, loss, out)
            self.report.count_sources(batch, out)
        # A non-finite loss on any rank makes the gradient norm non-finite on every rank (its
        # gradients reach them all through the all-reduce / reduce-scatter), so every rank
        # takes the same decision without a collective of its own.
        grad_norm = self.optimizer.gradient_norm()
        if not bool(torch.isfinite(grad_norm)):
            self.optimizer.discard_gradients()
            raise RunFailed(
                f"non-finite loss or gradient (loss {float(tally.loss_sum)} on rank {self.env.rank}, "
                f"gradient norm {float(grad_norm)}) at step {self.step + 1}: weights not updated, last "
                f"checkpoint kept; lower trainer.lr (now {self.cfg.trainer.lr:g}) or use trainer.grad_clip "
                "/ trainer.precision=fp32"
            )
        self.boundary = None  # the weights are changing: no consistent state until the step is whole
        lr = self.optimizer.apply_gradients(grad_norm)
        self.step += 1
        self.boundary = self._boundary()
        self.report.record_step(
            step_s=tally.elapsed(),
            wait_s=tally.wait_s,
            clips=tally.clips,
            tokens=tally.tokens,
            computed_tokens=tally.computed_tokens,
            loss=tally.loss_sum,
            skipped=tally.skipped,
        )
        return StepOutcome(lr=lr, grad_norm=grad_norm)

    def stop_requested(self, log_step: bool) -> bool:
        """Whether to checkpoint and stop after this step: a preemption signal on any rank, agreed
        at log steps (``signals.stop_agreed``)."""
        return signals.stop_agreed(self.env, log_step=log_step)

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
        result = self.validator.validate(self.raw_model, progress=self.report.validating)
        if result:
            predictions = self.validator.predictions(self.raw_model)
            result.update(self.validator.answer_metrics(predictions))
            self.report.log_validation(self.step, self.stream.epoch, result)
            self.report.log_predictions(self.step, predictions)
            if self.best is not None:
                self.best.consider(result, self.step, self.env, save=self._save_best, say=self.report.say)

    def _save_best(self) -> Path:
        return self.checkpointer.save(self.step, self.stream.position, self.report.skip_counts(), best=True)

    def export(self) -> None:
        """The final weights in Hugging Face formats, in ``<run_dir>/export`` (rank 0; see
        ``kvideo.model.export``), so the result loads outside kvideo; the strategy gives the
        whole weights (``Strategy.whole_model``)."""
        if not (self.cfg.trainer.export_at_end and self.env.is_main):
            return
        from kvideo.model.export import export_model

        out = self.run_dir / "export"
        model = self.strategy.whole_model(self.raw_model, self.run_dir)
        export_model(model, self.cfg, self.tokenizer, out, step=self.step, trained=self.trainable.ever())
        self.report.info("exported step %d -> %s", self.step, out)

    def _boundary(self) -> StepBoundary:
        return capture_boundary(self.step, self.stream.position, self.report.skip_counts())

    def _fail(self, error: Exception) -> None:
        """After an unexpected error: checkpoint the last step boundary when that is possible
        (``checkpoint_after_crash``), then record the failure (``failed.json``, ``train.log``)."""
        saved = checkpoint_after_crash(
            self.boundary,
            env=self.env,
            checkpointer=self.checkpointer,
            report=self.report,
            model=self.raw_model,
        )
        message = f"{type(error).__name__}: {one_line(error)}"
        peer = self.peer_failure()
        if peer is not None and not peer.startswith(f"rank {self.env.rank}:"):
            message = f"{message} (after {peer})"
        self.report.failed(message, self.step, checkpoint=saved, traceback=traceback.format_exc())

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
