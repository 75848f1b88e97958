"""The training loop: ``train(cfg, run_dir) -> final metrics``.

One optimizer step = ``trainer.grad_accum`` micro-batches of ``trainer.batch_size`` clips
*per process*, so the effective batch is ``batch_size * grad_accum * world_size``.

Resume is exact: a checkpoint stores the data position as (epoch, samples consumed by this
rank in that epoch), and the loader's order depends only on (seed, epoch), so the restarted
run sees the same batches; model/optimizer/scheduler/RNG states make it compute the same
steps. Fetching a batch and running validation are kept neutral for the global torch RNG
(``_rng_neutral``): creating a DataLoader iterator draws a base seed from it, so without that
a restart (which creates one iterator more than the uninterrupted run) would shift the RNG
stream that dropout uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from kvideo.config import KVideoConfig
from kvideo.config.checks import require_caption_room
from kvideo.config.memory import check_fits_on_gpu
from kvideo.decode.errors import SKIP_REASONS
from kvideo.train import signals
from kvideo.train.checkpoint import (
    CheckpointWriteError,
    capture_rng_state,
    checkpoint_dir,
    load_latest,
    restore_rng_state,
    save_checkpoint,
)
from kvideo.train.distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_counts,
    all_reduce_sum,
    any_ranks,
    cleanup,
    init_distributed,
    wrap_model,
)
from kvideo.train.evaluate import evaluate
from kvideo.train.guards import RunDirLock, RunFailed, SkipBudget, write_failed
from kvideo.train.metrics import FINAL_NAME, RunWriter, SkipTracker, StepTimer, now
from kvideo.train.schedule import build_scheduler

log = logging.getLogger(__name__)

# Modules whose ``weight`` is a matrix that weight decay should shrink. Everything else
# (biases, norm scales, nn.Embedding tables, free nn.Parameters such as position tables
# and class tokens) is excluded: decaying those pulls embeddings and norm gains towards 0,
# which only hurts.
_DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on Linear/Conv weight matrices only. Tied parameters appear once."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_matrix = param.ndim >= 2 and name.endswith("weight")
            (decay if is_matrix and isinstance(module, _DECAYED_MODULES) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def resolve_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``trainer.precision`` -> autocast dtype (``None`` = plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("trainer.precision=bf16 but this GPU does not support bfloat16; "
                               "use trainer.precision=fp32")
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _rng_neutral() -> Iterator[None]:
    """Restore the global CPU torch RNG after the block (see the module docstring)."""
    state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(state)


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
    raises ``RunDirBusy`` before anything is written.

    The preemption handlers are installed only once the trainer is built: a signal during
    start-up (building the corpus, allocating the model) has nothing to checkpoint and ends
    the process at once, as it would without kvideo.
    """
    _ensure_logging()
    signals.clear_request()
    env = init_distributed(cfg.trainer.device)
    lock = RunDirLock(run_dir) if env.is_main else contextlib.nullcontext()
    try:
        with lock:
            trainer = Trainer(cfg, Path(run_dir), env)
            restore_handlers = signals.install_signal_handlers()
            try:
                return trainer.run()
            finally:
                restore_handlers()
    finally:
        cleanup(env)


class Trainer:
    """State of one training process; ``run()`` drives it. Built by ``train()``."""

    def __init__(self, cfg: KVideoConfig, run_dir: Path, env: DistEnv) -> None:
        from kvideo.data.loader import build_dataset
        from kvideo.data.tokenizer import build_tokenizer
        from kvideo.model.vlm import build_model

        self.cfg, self.run_dir, self.env = cfg, run_dir, env
        tc = cfg.trainer
        self.device = env.device
        self.session_start = time.time()
        self.autocast_dtype = resolve_autocast_dtype(tc.precision, self.device)

        # Same initial weights whatever the world size; then one data/dropout stream per rank.
        seed_everything(tc.seed)
        self.tokenizer = build_tokenizer(cfg.data)
        require_caption_room(len(self.tokenizer.encode(cfg.video.prompt)), cfg.model.max_text_len,
                             cfg.data.tokenizer or "byte-level")
        if self.device.type == "cuda":  # compose time cannot ask the GPU (no torch there)
            check_fits_on_gpu(
                cfg, total_bytes=torch.cuda.mem_get_info(self.device)[1],
                bf16=self.autocast_dtype == torch.bfloat16, vocab_size=self.tokenizer.vocab_size,
                device=str(self.device),
            )
        # Before anything is written to the run dir: a wrong data_root or blocklist must
        # fail without leaving a half-started run behind.
        # GPU decoding must use the trainer's device, which is not always cuda:local_rank
        # (one visible GPU per task under --gpus-per-task makes every rank's device cuda:0).
        self.decode_gpu = self.device.index if self.device.type == "cuda" else env.local_rank
        self.train_set = build_dataset(
            cfg, split=cfg.video.split, tokenizer=self.tokenizer, local_rank=self.decode_gpu
        )
        self.raw_model = build_model(
            cfg.model,
            vocab_size=self.tokenizer.vocab_size,
            max_frames=cfg.video.max_frames,
            frame_size=cfg.video.frame_size,
        ).to(self.device)
        self.num_params = sum(p.numel() for p in self.raw_model.parameters())
        seed_everything(tc.seed + env.rank)

        self.optimizer = torch.optim.AdamW(
            param_groups(self.raw_model, tc.weight_decay),
            lr=tc.lr,
            betas=(0.9, 0.95),
            fused=self.device.type == "cuda",
        )
        self.scheduler = build_scheduler(
            self.optimizer, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps, min_lr_ratio=tc.min_lr_ratio
        )

        self.step = 0
        self.epoch = 0
        self.consumed = 0  # samples of `epoch` this rank has consumed
        self.prior_wall_s = 0.0
        self.resumed_from: int | None = None
        self.skips = SkipTracker()
        self.skip_budget = SkipBudget(cfg.data.max_skip_fraction)
        rank_state = self._load_checkpoint()

        self.writer = RunWriter(run_dir, enabled=env.is_main, resume_step=self.resumed_from)
        self.writer.write_config(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        self.writer.record_launch(resumed_from=self.resumed_from, world_size=env.world_size)

        model = wrap_model(self.raw_model, env)
        self.ddp = model if env.distributed else None
        self.model = torch.compile(model) if tc.compile else model

        self._val_set: Any = None
        self._val_error: str | None = None
        self._build_dataset = build_dataset
        self._batches: Iterator[dict[str, Any]] | None = None
        self._next_epoch: Iterator[dict[str, Any]] | None = None  # opened early, see next_batch
        self.timer = StepTimer()
        self.window_skipped = 0  # skipped samples of this rank since the last log step
        self.saved_step = self.resumed_from if self.resumed_from is not None else -1
        self.last_window: dict[str, Any] = {}
        self.last_val: dict[str, Any] = {}
        self.bar: Any = None  # tqdm progress bar on a TTY (rank 0)
        # Last: nothing after this may draw from the restored RNG streams.
        if rank_state is not None:
            restore_rng_state(rank_state["rng"])

    # ------------------------------------------------------------------ logging helpers

    def info(self, msg: str, *args: Any) -> None:
        if self.env.is_main:
            log.info(msg, *args)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ checkpoints

    def _load_checkpoint(self) -> dict[str, Any] | None:
        """Resume from ``checkpoints/last.pt`` if there is one; returns this rank's entry."""
        found = load_latest(checkpoint_dir(self.run_dir), map_location="cpu")
        if found is None:
            return None
        state, path = found
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.resumed_from = self.step
        self.prior_wall_s = float(state.get("wall_time_s", 0.0))
        data = state["data"]
        self.epoch = int(data["epoch"])
        saved_world = int(data["world_size"])
        consumed_global = int(data["samples_in_epoch"]) * saved_world
        self.consumed = consumed_global // self.env.world_size
        ranks = state["ranks"]
        rank_state = None
        if saved_world == self.env.world_size:
            rank_state = ranks[self.env.rank]
            self.skips = SkipTracker(rank_state["skipped"])
        else:
            # Shards are order[rank::world]: the first consumed_global samples of the epoch
            # order are done whatever the world size, so the position converts exactly when
            # divisible. RNG streams are per rank and cannot be mapped: fresh seeds.
            log.warning(
                "checkpoint was written by %d processes, this run has %d: data position converted "
                "(%d samples of epoch %d), per-rank RNG states not restored",
                saved_world, self.env.world_size, consumed_global, self.epoch,
            )
            if self.env.is_main:
                total: dict[str, int] = {}
                for r in ranks:
                    for k, v in r["skipped"].items():
                        total[k] = total.get(k, 0) + int(v)
                self.skips = SkipTracker(total)
        self.info("resuming from step %d (%s, epoch %d, %d samples into it)", self.step, path,
                  self.epoch, self.consumed)
        return rank_state

    def save(self) -> None:
        """Checkpoint the current step (a collective: every rank must call it)."""
        if self.saved_step == self.step:
            return
        self.flush_skipped()
        rank_entry = {"rng": capture_rng_state(), "skipped": dict(self.skips.counts)}
        ranks = all_gather_objects(rank_entry, self.env)
        if self.env.is_main:
            state = {
                "step": self.step,
                "model": self.raw_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "data": {"epoch": self.epoch, "samples_in_epoch": self.consumed,
                         "world_size": self.env.world_size},
                "ranks": ranks,
                "wall_time_s": self.wall_time(),
            }
            t0 = now()
            try:
                path = save_checkpoint(checkpoint_dir(self.run_dir), state)
            except CheckpointWriteError as e:
                # Fail clean rather than train on: every later save would fail the same way
                # and a preemption would then lose everything since the last good checkpoint.
                raise RunFailed(f"step {self.step}: {e}") from None
            log.info("saved checkpoint step %d -> %s (%.2fs)", self.step, path, now() - t0)
        self.saved_step = self.step

    def wall_time(self) -> float:
        return self.prior_wall_s + (time.time() - self.session_start)

    # ------------------------------------------------------------------ data

    def _open_epoch(self, epoch: int, skip: int) -> Iterator[dict[str, Any]]:
        from kvideo.data.loader import build_loader

        with _rng_neutral():  # iter(DataLoader) draws a base seed from the global CPU RNG
            return build_loader(
                self.train_set, self.cfg, rank=self.env.rank, world_size=self.env.world_size,
                epoch=epoch, skip_samples=skip, shuffle=True,
                batch_size=self.cfg.trainer.batch_size, drop_last=True, device=self.device,
            )

    def _open_next_epoch_early(self) -> None:
        """Start the next epoch's workers while this epoch's last batches train.

        Without it every epoch boundary waits for worker start-up and a full prefetch: on the
        embedded default (50 batches an epoch) that was ~10% data wait in those windows.
        Only with worker processes: they hold their own copy of the dataset (and its epoch),
        whereas in-process loading would see the next epoch's sampling seed too early.
        """
        from kvideo.data.loader import GPU_DECODERS

        if (self._next_epoch is not None or self.cfg.trainer.num_workers == 0
                or self.cfg.decoder.name in GPU_DECODERS):
            return
        per_epoch = len(self.train_set) // self.env.world_size // self.cfg.trainer.batch_size
        if per_epoch - self.consumed // self.cfg.trainer.batch_size <= 1:
            self._next_epoch = self._open_epoch(self.epoch + 1, 0)

    def _close_loaders(self) -> None:
        """Drop the loader iterators (and with them their worker processes)."""
        self._batches = None
        self._next_epoch = None

    def next_batch(self) -> dict[str, Any]:
        """The next training batch, moving to the next epoch when this one is exhausted."""
        fresh_epoch = False
        while True:
            if self._batches is None:
                if self._next_epoch is not None and self.consumed == 0:
                    self._batches, self._next_epoch = self._next_epoch, None
                else:
                    self._batches = self._open_epoch(self.epoch, self.consumed)
                fresh_epoch = self.consumed == 0
            with _rng_neutral():
                batch = next(self._batches, None)
            if batch is not None:
                self.consumed += len(batch["skip_reason"])
                self._open_next_epoch_early()
                return batch
            self._batches = None
            if fresh_epoch:
                raise RuntimeError(
                    f"the train split yields no full batch: {len(self.train_set)} clips < "
                    f"trainer.batch_size ({self.cfg.trainer.batch_size}) x processes ({self.env.world_size})"
                )
            self.epoch += 1
            self.consumed = 0

    # ------------------------------------------------------------------ validation

    def validate(self) -> dict[str, Any]:
        """Validation metrics, or {} when there is no validation split (said once)."""
        if self._val_error is not None:
            return {}
        if self._val_set is None:
            try:
                self._val_set = self._build_dataset(
                    self.cfg, split="validation", tokenizer=self.tokenizer, local_rank=self.decode_gpu
                )
            except (ValueError, FileNotFoundError) as e:
                self._val_error = str(e)
                log.warning("no validation: %s", e)
                return {}
        from kvideo.data.loader import build_loader

        tc = self.cfg.trainer
        t0 = now()
        with _rng_neutral():
            batches = build_loader(
                self._val_set, self.cfg, rank=self.env.rank, world_size=self.env.world_size, epoch=0,
                skip_samples=0, shuffle=False, batch_size=tc.batch_size, drop_last=False, device=self.device,
            )
            result = evaluate(
                self.raw_model, batches, tokenizer=self.tokenizer, prompt=self.cfg.video.prompt,
                max_text_len=self.cfg.model.max_text_len, env=self.env, num_samples=len(self._val_set),
                max_batches=tc.val_max_batches, max_rows=4 * tc.batch_size, autocast=self.autocast,
            )
        result["val_time_s"] = now() - t0
        record = {"split": "validation", "step": self.step, "epoch": self.epoch, **result}
        self.writer.log(record, tb_prefix="val")
        accs = " ".join(f"{k}={v:.3f}" for k, v in result.items() if k.startswith("acc_"))
        self._say(f"validation step {self.step}: loss {result['val_loss']:.4f} {accs}")
        self.last_val = result
        return result

    # ------------------------------------------------------------------ training

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` micro-batches."""
        tc = self.cfg.trainer
        t_start = now()
        wait = 0.0
        clips = 0
        skipped = 0
        tokens = torch.zeros((), dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        pad_id = getattr(self.tokenizer, "pad_id", None)
        tpf = self.cfg.model.tokens_per_frame
        for micro in range(tc.grad_accum):
            t0 = now()
            batch = self.next_batch()
            wait += now() - t0
            self.skips.update(batch["skip_reason"], batch["path"])
            last = micro == tc.grad_accum - 1
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    out = self.model(
                        batch["frames"], batch["frame_mask"], batch["input_ids"], batch["labels"]
                    )
                loss = out["loss"] / tc.grad_accum
                loss.backward()
            loss_sum += loss.detach().float()
            clips += len(batch["skip_reason"])
            skipped += sum(1 for reason in batch["skip_reason"] if reason)
            text = batch["input_ids"] != pad_id if pad_id is not None else torch.ones_like(batch["input_ids"])
            tokens += batch["frame_mask"].sum() * tpf + text.sum()
        # One collective for both flags: a non-finite loss on any rank (its gradients reach
        # every rank through the all-reduce) and a preemption signal on any rank.
        non_finite, preempt = any_ranks(
            [not bool(torch.isfinite(loss_sum)), signals.checkpoint_requested()], self.env
        )
        if non_finite:
            self.optimizer.zero_grad(set_to_none=True)
            raise RunFailed(
                f"non-finite loss ({float(loss_sum)} on rank {self.env.rank}) at step {self.step + 1}: "
                f"weights not updated, last checkpoint kept; lower trainer.lr (now {tc.lr:g}) or use "
                "trainer.grad_clip / trainer.precision=fp32"
            )
        grad_norm = None
        if tc.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), tc.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.timer.add_step(step_s=now() - t_start, wait_s=wait, clips=clips, tokens=tokens, loss=loss_sum)
        self.window_skipped += skipped
        return {"lr": lr, "grad_norm": grad_norm, "preempt": preempt}

    def log_step(self, info: dict[str, Any]) -> None:
        """A metrics line (collectives: every rank calls this at the same steps)."""
        counts = self.flush_skipped()
        t = self.timer
        summed = all_reduce_sum(
            [float(t.loss_sum), float(t.tokens), float(t.clips), float(self.window_skipped)], self.env
        )
        window = t.window(self.env.world_size, summed[:3])
        self.timer.reset()
        self.window_skipped = 0
        last = self.step == self.cfg.trainer.max_steps
        self.skip_budget.add(int(summed[2]), int(summed[3]), step=self.step, last=last)
        skipped = {k: v for k, v in counts.items() if v}
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": window["loss"],
            "lr": info["lr"],
            "grad_norm": None if info["grad_norm"] is None else float(info["grad_norm"]),
            "tokens_per_s": window["tokens_per_s"],
            "clips_per_s": window["clips_per_s"],
            "data_wait_share": window["data_wait_share"],
            "skipped": skipped,
            "skipped_total": sum(counts.values()),
        }
        self.last_window = record
        self.writer.log(record, tb_prefix="train")
        self._say(
            f"step {self.step}/{self.cfg.trainer.max_steps} epoch {self.epoch} loss {record['loss']:.4f} "
            f"lr {record['lr']:.2e} {record['clips_per_s']:.1f} clips/s "
            f"data wait {100 * record['data_wait_share']:.1f}% skipped {record['skipped_total']}",
            progress=True,
        )

    def _say(self, line: str, *, progress: bool = False) -> None:
        if not self.env.is_main:
            return
        if self.bar is not None:
            if progress:
                self.bar.set_postfix_str(line.split(" ", 2)[2], refresh=False)
            else:
                self.bar.write(line)
        else:
            log.info(line)

    def flush_skipped(self) -> dict[str, int]:
        """Hand new bad files to rank 0 for skipped.jsonl; returns the all-reduced counts
        (collectives: every rank calls this at the same points)."""
        counts = all_reduce_counts(self.skips.counts, list(SKIP_REASONS), self.env)
        pending = all_gather_objects(self.skips.take_pending(), self.env)
        self.writer.add_skipped(entry for rank_entries in pending for entry in rank_entries)
        return counts

    def final_metrics(self, status: str) -> dict[str, Any]:
        counts = self.flush_skipped()
        t = self.timer
        secs = max(t.total_step_s, 1e-9)
        final = {
            "status": status,
            "step": self.step,
            "max_steps": self.cfg.trainer.max_steps,
            "epoch": self.epoch,
            "train_loss": self.last_window.get("loss"),
            **self.last_val,
            "skipped": {k: v for k, v in counts.items() if v},
            "skipped_total": sum(counts.values()),
            "wall_time_s": self.wall_time(),
            "session_wall_time_s": time.time() - self.session_start,
            "data_wait_share": t.total_wait_s / secs if t.total_step_s else None,
            "clips_per_s": t.total_clips * self.env.world_size / secs if t.total_step_s else None,
            "world_size": self.env.world_size,
            "num_params": self.num_params,
            "resumed_from": self.resumed_from,
            "run_dir": str(self.run_dir),
        }
        return final

    def run(self) -> dict[str, Any]:
        tc = self.cfg.trainer
        if self.step >= tc.max_steps:
            done = self.run_dir / FINAL_NAME
            if done.exists():
                self.info("already complete at step %d (%s)", self.step, done)
                self.writer.close()
                return json.loads(done.read_text())
        if self.env.is_main and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        self.info(
            "training %s params on %s (%s, world size %d) for %d steps from step %d",
            f"{self.num_params:,}", self.device, self.autocast_dtype or "fp32", self.env.world_size,
            tc.max_steps, self.step,
        )
        status = "completed"
        try:
            while self.step < tc.max_steps:
                info = self.train_step()
                if self.bar is not None:
                    self.bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    self.log_step(info)
                if tc.val_every and self.step % tc.val_every == 0 and self.step < tc.max_steps:
                    self.validate()
                if tc.ckpt_every and self.step % tc.ckpt_every == 0:
                    self.save()
                if info["preempt"]:
                    self._close_loaders()
                    self.save()
                    self._say(f"preempted ({signals.request_reason() or 'another rank'}): "
                              f"checkpointed step {self.step}, exiting")
                    status = "preempted"
                    break
            if status == "completed":
                self._close_loaders()  # release loader workers before validation
                self.validate()
                self.save()
            final = self.final_metrics(status)
            if status == "completed":
                self.writer.write_final(final)
                self._say(
                    f"done: step {self.step} val_loss {final.get('val_loss')} "
                    f"wall {final['wall_time_s']:.1f}s -> {self.run_dir}"
                )
            else:
                final["exit_code"] = signals.EXIT_PREEMPTED
            return final
        except RunFailed as e:
            self._close_loaders()
            self._say(f"failed: {e}")
            if self.env.is_main:
                write_failed(self.run_dir, str(e), self.step)
            raise
        finally:
            if self.bar is not None:
                self.bar.close()
            self.writer.close()

