"""The trainer's components that need more than a constructor call, built from the config in
the order ``Trainer.__init__`` gives: the tokenizer (with its checks), the optimizer (with the
per-part learning rates), the checkpointer (in the strategy's format) and the reporter (with what
it says at start)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from kvideo.config import KVideoConfig, TrainerConfig
from kvideo.config.checks import require_caption_room
from kvideo.model.spec import ModelSpec
from kvideo.preflight.memory import check_fits_on_gpu
from kvideo.train.checkpointer import Checkpointer, Resume
from kvideo.train.distributed import DistEnv
from kvideo.train.freeze import TrainableSchedule
from kvideo.train.metrics import RunClock
from kvideo.train.optim import ScheduledOptimizer
from kvideo.train.parallel import Strategy
from kvideo.train.precision import Autocast
from kvideo.train.report import RUN_LOG, Reporter
from kvideo.train.resume import init_weights


def tokenizer_with_room(
    cfg: KVideoConfig, device: torch.device, autocast: Autocast, strategy: Strategy
) -> Any:
    """The model's tokenizer, with room for a caption after the prompt, and (on a GPU) the
    memory check that needs its vocabulary: the pre-flight step cannot ask the GPU (no torch
    there)."""
    from kvideo.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(cfg.data, cfg.model)
    require_caption_room(len(tokenizer.context_ids(cfg.video.prompt)), cfg.model.max_text_len, tokenizer.name)
    if device.type == "cuda":
        check_fits_on_gpu(
            cfg,
            total_bytes=torch.cuda.mem_get_info(device)[1],
            bf16=autocast.dtype == torch.bfloat16,
            vocab_size=tokenizer.vocab_size,
            device=str(device),
            ranks=strategy.state_parts,
        )
    return tokenizer


def optimizer_for(
    model: torch.nn.Module,
    cfg: KVideoConfig,
    spec: ModelSpec,
    trainable: TrainableSchedule,
    device: torch.device,
) -> ScheduledOptimizer:
    """AdamW over every parameter that trains at some step, with ``model.<part>_lr`` per part
    when any is set."""
    settings, model_cfg = cfg.trainer, cfg.model
    own_lrs = any(model_cfg.part_lr(part, 0.0) for part in spec.parts)
    return ScheduledOptimizer(
        model,
        settings,
        fused=device.type == "cuda" and not settings.fsdp_cpu_offload,
        include=trainable.ever(),
        lr_of_part=(lambda part: model_cfg.part_lr(part, settings.lr)) if own_lrs else None,
        part_of=spec.part_of,
    )


def checkpointer_for(
    cfg: KVideoConfig,
    run_dir: Path,
    env: DistEnv,
    model: torch.nn.Module,
    optimizer: ScheduledOptimizer,
    clock: RunClock,
    strategy: Strategy,
    *,
    saved_weights: frozenset[str] | None,
) -> Checkpointer:
    """The run's checkpointer, in the strategy's format, keeping ``saved_weights`` (None = the
    whole state dict; ``ModelSpec.checkpoint_keys``)."""
    trainer = cfg.trainer
    return Checkpointer(
        run_dir,
        env,
        model=model,
        optimizer=optimizer,
        clock=clock,
        saved_weights=saved_weights,
        checkpoint_format=strategy.checkpoint_format,
        async_save=trainer.ckpt_async,
        every=trainer.ckpt_every,
        keep_last=trainer.keep_last,
    )


def reporter_for(
    cfg: KVideoConfig,
    run_dir: Path,
    env: DistEnv,
    clock: RunClock,
    num_params: int,
    resume: Resume | None,
    left_out: dict[str, int],
    launch: dict[str, Any],
) -> Reporter:
    """The run's reporter (a collective), which says what the dataset listing left out;
    ``launch``: what this start did besides, for ``launches.jsonl``."""
    report = Reporter(
        run_dir,
        env,
        cfg.trainer,
        cfg.data,
        clock=clock,
        num_params=num_params,
        resumed_from=None if resume is None else resume.step,
        skipped=None if resume is None else resume.skipped,
        config_yaml=OmegaConf.to_yaml(OmegaConf.structured(cfg)),
        left_out=left_out,
    )
    report.record_start(**launch)
    if left_out:
        counts = ", ".join(f"{n:,} {reason}" for reason, n in left_out.items())
        report.say(f"the dataset listing left out {counts} rows (counted once, never read)")
    return report


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def start_notes(
    model: torch.nn.Module,
    settings: TrainerConfig,
    resume: Resume | None,
    config_changes: dict[str, list[Any]] | None,
) -> dict[str, Any]:
    """What this start does besides training, for ``launches.jsonl``: the identity keys a forced
    resume changed, and (a new run only) the weights ``trainer.init_from`` loads, loaded here."""
    notes: dict[str, Any] = {"config_changes": config_changes} if config_changes else {}
    if resume is None and settings.init_from:
        RUN_LOG.info(init_weights(model, settings.init_from))
        notes["initialized_from"] = settings.init_from
    return notes
