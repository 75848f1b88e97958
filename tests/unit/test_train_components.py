"""Trainer components on their own, without a corpus or a training run: what a checkpoint maps
the trainer's state to and back (including a resume under another world size), and the
weight update's lr bookkeeping. The loop end to end is tested in test_train_loop.py."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from torch import nn

from kvideo.config import DataConfig, TrainerConfig
from kvideo.data.settings import ClipSettings
from kvideo.train.checkpoint import capture_rng_state, checkpoint_dir, save_checkpoint
from kvideo.train.checkpointer import Checkpointer
from kvideo.train.distributed import DistEnv
from kvideo.train.metrics import RunClock
from kvideo.train.optim import ScheduledOptimizer
from kvideo.train.schedule import lr_factor
from kvideo.train.stream import DataPosition

SCHEDULE = TrainerConfig(lr=1e-2, warmup_steps=2, max_steps=10, grad_clip=1.0)


def _env(rank: int = 0, world_size: int = 1) -> DistEnv:
    """A rank's view without a process group: enough for everything but ``save`` at world > 1."""
    return DistEnv(
        rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"), is_main=rank == 0
    )


def _trained_parts(seed: int, steps: int) -> tuple[nn.Module, ScheduledOptimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    optimizer = ScheduledOptimizer(model, SCHEDULE, fused=False)
    for _ in range(steps):
        model(torch.randn(2, 4)).pow(2).sum().backward()
        optimizer.apply_gradients(optimizer.gradient_norm())
    return model, optimizer


def test_a_checkpoint_restores_weights_optimizer_position_skips_and_this_ranks_rng(tmp_path: Path) -> None:
    model, optimizer = _trained_parts(seed=0, steps=3)
    saver = Checkpointer(tmp_path, _env(), model=model, optimizer=optimizer, clock=RunClock())
    assert saver.load() is None  # a fresh run dir
    rng_at_save = torch.get_rng_state()
    saver.save(3, DataPosition(epoch=2, samples_in_epoch=48), {"empty": 2})
    assert saver.holds(3)

    other_model, other_optimizer = _trained_parts(seed=1, steps=0)
    clock = RunClock()
    loader = Checkpointer(tmp_path, _env(), model=other_model, optimizer=other_optimizer, clock=clock)
    resume = loader.load()
    assert resume is not None and loader.holds(3)
    assert (resume.step, resume.position, resume.skipped) == (3, DataPosition(2, 48), {"empty": 2})
    assert resume.rng is not None and torch.equal(resume.rng["torch"], rng_at_save)
    for name, value in model.state_dict().items():
        assert torch.equal(other_model.state_dict()[name], value), name
    assert other_optimizer.scheduler.last_epoch == 3
    assert other_optimizer.optimizer.state_dict()["state"][0]["step"] == 3
    assert clock.prior_wall_s > 0


def test_a_checkpoint_from_another_world_size_converts_the_position_and_keeps_the_skip_total(
    tmp_path: Path,
) -> None:
    """4 ranks had each consumed 24 samples of epoch 1 (96 of its order); 2 ranks go on at 48
    each. Per-rank RNG streams cannot be mapped; the skip counts survive summed on rank 0."""
    model, optimizer = _trained_parts(seed=0, steps=1)
    save_checkpoint(
        checkpoint_dir(tmp_path),
        {
            "step": 1,
            "model": model.state_dict(),
            "optimizer": optimizer.optimizer.state_dict(),
            "scheduler": optimizer.scheduler.state_dict(),
            "data": {"epoch": 1, "samples_in_epoch": 24, "world_size": 4},
            "ranks": [
                {"rng": capture_rng_state(), "skipped": {"empty": 1, "unreadable": rank}} for rank in range(4)
            ],
            "wall_time_s": 7.0,
        },
    )
    for rank in (0, 1):
        clock = RunClock()
        resume = Checkpointer(
            tmp_path, _env(rank, world_size=2), model=model, optimizer=optimizer, clock=clock
        ).load()
        assert resume is not None
        assert resume.position == DataPosition(epoch=1, samples_in_epoch=48)
        assert resume.rng is None
        assert resume.skipped == ({"empty": 4, "unreadable": 6} if rank == 0 else {})
        assert clock.prior_wall_s == 7.0


def test_the_weight_update_reports_the_lr_its_step_used_and_clears_the_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = ScheduledOptimizer(model, SCHEDULE, fused=False)
    lrs = []
    for _ in range(4):
        model(torch.randn(2, 4)).pow(2).sum().backward()
        grad_norm = optimizer.gradient_norm()
        assert float(grad_norm) > 0
        lrs.append(optimizer.apply_gradients(grad_norm))
        assert all(p.grad is None for p in model.parameters())
    expected = [
        SCHEDULE.lr * lr_factor(step, warmup_steps=2, max_steps=10, min_lr_ratio=SCHEDULE.min_lr_ratio)
        for step in range(4)
    ]
    assert lrs == pytest.approx(expected)


def test_components_own_their_cadence(tmp_path: Path) -> None:
    """The loop asks each component whether a step is due: the reporter logs every
    ``log_every`` steps and the last, the checkpointer saves every ``ckpt_every``, and the
    validator validates every ``val_every`` steps but the last (the final validation follows)."""
    from kvideo.config import KVideoConfig
    from kvideo.train.report import Reporter
    from kvideo.train.validator import Validator

    trainer = TrainerConfig(log_every=20, val_every=10, max_steps=30)
    reporter = Reporter(
        tmp_path,
        _env(),
        trainer,
        DataConfig(),
        clock=RunClock(),
        num_params=1,
        resumed_from=None,
        skipped=None,
        config_yaml="",
    )
    model, optimizer = _trained_parts(seed=0, steps=0)
    checkpointer = Checkpointer(
        tmp_path, _env(), model=model, optimizer=optimizer, clock=RunClock(), every=10
    )
    cfg = KVideoConfig(trainer=trainer)
    validator = Validator(
        cfg, _env(), ClipSettings.of(cfg), tokenizer=None, decode_gpu=0, autocast=contextlib.nullcontext
    )
    try:
        steps = range(1, 31)
        assert [s for s in steps if reporter.should_log(s)] == [20, 30]
        assert [s for s in steps if checkpointer.should_save(s)] == [10, 20, 30]
        assert [s for s in steps if validator.should_validate(s)] == [10, 20]
    finally:
        reporter.close()
