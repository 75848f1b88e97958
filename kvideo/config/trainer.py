"""``TrainerConfig``: optimisation, devices, logging and checkpointing knobs."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from kvideo.config.checks import (
    require_at_most,
    require_choice,
    require_choices,
    require_non_negative,
    require_positive,
    require_range,
)

DEVICES = ("auto", "cpu", "cuda")
# auto: nccl on CUDA, gloo on the CPU (kvideo.train.distributed.resolve_backend).
BACKENDS = ("auto", "gloo", "nccl")
# ddp: every rank holds the whole model and optimizer; fsdp: FSDP2 shards parameters, gradients
# and optimizer states over the ranks (kvideo.train.fsdp).
STRATEGIES = ("ddp", "fsdp")
PRECISIONS = ("auto", "bf16", "fp32")
# Experiment trackers (kvideo.train.loggers.LOGGER_TYPES has the same names; this module stays
# torch-free, so it cannot import them from there).
LOGGERS = ("tensorboard", "wandb")
# What a run dir that already holds a checkpoint does (kvideo.train.resume).
RESUME_MODES = ("auto", "force", "never")
KEEP_BEST_MODES = ("min", "max")
# Per process, per micro-batch: twice CLIP's *global* batch (32768, split over hundreds of GPUs).
# Smaller batches that still cannot fit are refused by the memory estimate (kvideo/preflight/memory.py).
MAX_BATCH_SIZE = 65536


@dataclass
class TrainerConfig:
    """AdamW + warmup/cosine, AMP, DDP or FSDP2, checkpoint/resume, metrics. ``*_every`` are in
    optimizer steps; 0 disables that action. These defaults are ``trainer=default``'s (the
    group file sets nothing of its own): sized so ``python train.py`` learns the embedded sample
    corpus on 2 CPU cores in minutes (colour in ~100 steps, shape and motion direction after
    ~600-900).

    max_steps: optimizer steps to train for (the schedule's length).
    batch_size: clips per process and micro-batch.
    lr: peak learning rate (AdamW), after the warmup.
    weight_decay: AdamW's decoupled weight decay.
    warmup_steps: linear warmup from 0 to ``lr``, then cosine decay.
    min_lr_ratio: the cosine decay ends at ``lr * min_lr_ratio``.
    grad_clip: clip the global gradient norm to this (0 = off).
    grad_accum: micro-batches per optimizer step (effective batch = batch_size * grad_accum * ranks).
    device: ``auto`` (CUDA when present), ``cuda`` or ``cpu``.
    precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``bf16`` or ``fp32``.
    compile: run the model under ``torch.compile``.
    num_workers: DataLoader worker processes per rank that decode clips.
    log_every: steps per log window (``metrics.jsonl``, the console, the trackers).
    ckpt_every: steps between periodic checkpoints (the final and preemption ones always happen).
    val_every: steps between validations (the final validation always happens).
    val_max_batches: validate on at most this many batches (0 = the whole split).
    seed: seed of the weights, the data order and the augmentations.
    backend: the process group's, with more than one process: ``auto`` = ``nccl`` on CUDA,
        ``gloo`` on the CPU.
    strategy: ``ddp`` (every rank holds the whole model, gradients all-reduced) or ``fsdp``
        (FSDP2: each transformer block of the vision tower and the LM, then the rest, sharded
        over the ranks; checkpoints through torch.distributed.checkpoint, one shard per rank).
    fsdp_cpu_offload: with ``fsdp`` on CUDA, keep the parameter, gradient and optimizer shards
        in host memory between uses (the optimizer steps on the CPU).
    ckpt_async: write checkpoints in a background thread after a copy to host memory, so
        training goes on while they are written (``fsdp`` checkpoints only).
    loggers: the experiment trackers the metrics are mirrored to besides ``metrics.jsonl``
        (``tensorboard``, ``wandb``: ``pip install 'kvideo[wandb]'``; ``WANDB_MODE=offline`` runs
        without a network).
    wandb_project: the Weights & Biases project of ``wandb``.
    val_predictions: validation clips captioned at each validation (greedy), shown beside their
        references in the trackers and ``predictions_val.jsonl``; 0 = none.
    export_at_end: a completed run writes its weights in Hugging Face formats to
        ``<run_dir>/export`` (``python -m kvideo.export`` does it for any checkpoint).
    resume: what a run dir holding a checkpoint does: ``auto`` resumes it unless its saved config
        is another experiment (another dataset, model or sampling: refused, naming the keys),
        ``force`` resumes it anyway (the changes go to ``launches.jsonl``), ``never`` refuses it.
    init_from: a run dir, checkpoint or export whose weights a new run starts from, with a fresh
        optimizer, schedule and data position (stage 2 on new data); a resumed run ignores it.
    keep_last: step checkpoints kept (``step_XXXXXX.pt`` copies or DCP folders): the newest and
        the ones to fall back to when it is damaged.
    keep_best: a validation metric (``val_loss``, ``acc_color``, ...) whose best value's weights
        are kept as ``checkpoints/best.pt`` (``best.dcp``) and in ``final.json``; empty = none.
    keep_best_mode: ``min`` or ``max``: which way ``keep_best`` is better.
    """

    max_steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    device: str = "auto"
    backend: str = "auto"
    strategy: str = "ddp"
    fsdp_cpu_offload: bool = False
    ckpt_async: bool = False
    precision: str = "auto"
    compile: bool = False
    num_workers: int = 2
    log_every: int = 20
    ckpt_every: int = 300
    val_every: int = 300
    val_max_batches: int = 0
    seed: int = 0
    loggers: list[str] = dataclasses.field(default_factory=lambda: ["tensorboard"])
    wandb_project: str = "kvideo"
    val_predictions: int = 4
    export_at_end: bool = True
    resume: str = "auto"
    init_from: str = ""
    keep_last: int = 2
    keep_best: str = ""
    keep_best_mode: str = "min"

    def __post_init__(self) -> None:
        require_choice("trainer.resume", self.resume, RESUME_MODES)
        require_choice("trainer.keep_best_mode", self.keep_best_mode, KEEP_BEST_MODES)
        if self.keep_best and not re.fullmatch(r"[a-z][a-z0-9_/]*", self.keep_best):
            raise ValueError(
                f"trainer.keep_best must name a validation metric such as val_loss or acc_color "
                f"(got {self.keep_best!r})"
            )
        for field in ("max_steps", "batch_size", "lr", "grad_accum", "log_every", "keep_last"):
            require_positive(f"trainer.{field}", getattr(self, field))
        require_at_most(
            "trainer.batch_size",
            self.batch_size,
            MAX_BATCH_SIZE,
            "clips per process and micro-batch; 65536 is twice CLIP's global batch",
        )
        for field in (
            "weight_decay",
            "warmup_steps",
            "grad_clip",
            "num_workers",
            "ckpt_every",
            "val_every",
            "val_max_batches",
            "val_predictions",
            "seed",
        ):
            require_non_negative(f"trainer.{field}", getattr(self, field))
        require_range("trainer.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        require_choice("trainer.device", self.device, DEVICES)
        require_choice("trainer.backend", self.backend, BACKENDS)
        require_choice("trainer.strategy", self.strategy, STRATEGIES)
        fsdp_only = (("fsdp_cpu_offload", "offloads FSDP shards"), ("ckpt_async", "saves DCP checkpoints"))
        for field, what in fsdp_only:
            if getattr(self, field) and self.strategy != "fsdp":
                raise ValueError(
                    f"trainer.{field} {what}: it needs trainer.strategy=fsdp (got {self.strategy!r})"
                )
        require_choice("trainer.precision", self.precision, PRECISIONS)
        require_choices("trainer.loggers", self.loggers, LOGGERS)
        if not self.wandb_project.strip():
            raise ValueError(
                f"trainer.wandb_project must be a non-empty W&B project name (got {self.wandb_project!r})"
            )
