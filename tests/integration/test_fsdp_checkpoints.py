"""FSDP2 and sharded checkpoints on gloo ranks, through the trainer's own components (the model
builder, ``apply_fsdp``, ``ScheduledOptimizer``, ``Checkpointer``), without a corpus:

* what one world size or strategy saves, another loads exactly (weights, AdamW moments and step
  counts, schedule): 2 ranks -> 1, 1 -> 2, DDP's single file -> shards, shards -> a whole model;
* a background save holds the state of its step, though training goes on while it is written;
* a process killed while saving never leaves a checkpoint that loads half written;
* every transformer block is its own FSDP unit, recomputed in the backward pass under
  activation checkpointing with the same gradients; a model without blocks is one unit, and
  says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from kvideo.config import ModelConfig, TrainerConfig
from kvideo.train.checkpoint_dcp import (
    METADATA_NAME,
    commit,
    folder_for,
    list_dcp_checkpoints,
    newest_checkpoint,
    tmp_for,
)
from tests.helpers.configs import tiny_model
from tests.helpers.paths import REPO
from tests.helpers.ranks import run_ranks

pytestmark = pytest.mark.slow  # trains a model

KEEP_SHARDED = 2  # trainer.keep_last's default

MODEL = tiny_model(patch_size=16, lm_depth=2, max_text_len=12)
OPTIM = TrainerConfig(lr=1e-2, warmup_steps=1, max_steps=10, grad_clip=1.0)
FRAMES, SIZE, VOCAB = 2, 32, 50


def _build(env: Any, *, sharded: bool, seed: int, checkpointing: bool = False) -> tuple[nn.Module, Any]:
    from kvideo.model import build_model
    from kvideo.model.blocks import transformer_blocks
    from kvideo.train.fsdp import apply_fsdp
    from kvideo.train.optim import ScheduledOptimizer

    torch.manual_seed(seed)
    cfg = ModelConfig(**{**vars(MODEL), "activation_checkpointing": checkpointing})
    model = build_model(cfg, vocab_size=VOCAB, max_frames=FRAMES, frame_size=SIZE)
    if sharded:
        apply_fsdp(model, env, units=transformer_blocks(model), compute_dtype=None, cpu_offload=False)
    return model, ScheduledOptimizer(model, OPTIM, fused=False)


def _batch(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    frames = torch.randn(3, FRAMES, 3, SIZE, SIZE, generator=generator)
    ids = torch.randint(0, VOCAB, (3, 12), generator=generator)
    return frames, torch.ones(3, FRAMES, dtype=torch.bool), ids, ids


def _train(model: nn.Module, optimizer: Any, rank: int, steps: int) -> None:
    """``steps`` steps, each rank on its own data."""
    generator = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        model(*_batch(generator))["loss"].backward()
        optimizer.apply_gradients(optimizer.gradient_norm())


def _whole_state(model: nn.Module, optimizer: Any, sharded: bool) -> dict[str, Any]:
    """Weights, optimizer states (by parameter name) and schedule, whole, on rank 0 (CPU)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True) if sharded else None
    weights, optim = get_state_dict(model, optimizer.optimizer, options=options)
    # cpu_offload leaves the other ranks empty dicts
    return {"model": weights, "optimizer": optim.get("state"), "scheduler": optimizer.scheduler.state_dict()}


def _checkpointer(run_dir: str, env: Any, model: nn.Module, optimizer: Any, sharded: bool, **kw: Any) -> Any:
    from kvideo.train.checkpoint import SINGLE_FILE
    from kvideo.train.checkpoint_dcp import DCP
    from kvideo.train.checkpointer import Checkpointer
    from kvideo.train.metrics import RunClock

    return Checkpointer(
        Path(run_dir),
        env,
        model=model,
        optimizer=optimizer,
        clock=RunClock(),
        checkpoint_format=DCP if sharded else SINGLE_FILE,
        **kw,
    )


def _save(rank: int, strategy: str, run_dir: str, out: str) -> None:
    from kvideo.train.distributed import cleanup, init_distributed
    from kvideo.train.stream import DataPosition

    sharded = strategy == "fsdp"
    env = init_distributed("cpu", group_of_one=sharded)
    try:
        model, optimizer = _build(env, sharded=sharded, seed=0)
        _train(model, optimizer, rank, steps=3)
        _checkpointer(run_dir, env, model, optimizer, sharded).save(3, DataPosition(0, 9), {})
        whole = _whole_state(model, optimizer, sharded)
        if rank == 0:
            torch.save(whole, Path(out) / "saved.pt")
    finally:
        cleanup(env)


def _load(rank: int, strategy: str, run_dir: str, out: str) -> None:
    from kvideo.train.distributed import cleanup, init_distributed

    sharded = strategy == "fsdp"
    env = init_distributed("cpu", group_of_one=sharded)
    try:
        model, optimizer = _build(env, sharded=sharded, seed=1)  # other weights: the load must replace them
        resume = _checkpointer(run_dir, env, model, optimizer, sharded).load()
        assert resume is not None and resume.step == 3
        whole = _whole_state(model, optimizer, sharded)
        if rank == 0:
            torch.save(whole, Path(out) / "loaded.pt")
    finally:
        cleanup(env)


def _assert_same_state(saved: dict[str, Any], loaded: dict[str, Any]) -> None:
    assert saved["model"].keys() == loaded["model"].keys()
    for name, value in saved["model"].items():
        assert torch.equal(value, loaded["model"][name]), name
    assert saved["optimizer"].keys() == loaded["optimizer"].keys() and saved["optimizer"]
    for name, state in saved["optimizer"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["optimizer"][name][key])), (
                name,
                key,
            )
    assert saved["scheduler"]["last_epoch"] == loaded["scheduler"]["last_epoch"] == 3


@pytest.mark.parametrize(
    ("saved_by", "loaded_by"),
    [
        ((2, "fsdp"), (1, "fsdp")),
        ((1, "fsdp"), (2, "fsdp")),
        ((1, "ddp"), (2, "fsdp")),
        ((2, "fsdp"), (1, "ddp")),
    ],
    ids=["2 fsdp ranks -> 1", "1 fsdp rank -> 2", "ddp file -> 2 fsdp ranks", "2 fsdp ranks -> whole model"],
)
def test_what_one_world_size_or_strategy_saves_another_loads_exactly(
    saved_by: tuple[int, str], loaded_by: tuple[int, str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_ranks(_save, saved_by[0], saved_by[1], str(run_dir), str(tmp_path))
    written = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert written == (["step_000003.dcp"] if saved_by[1] == "fsdp" else ["last.pt", "step_000003.pt"])
    run_ranks(_load, loaded_by[0], loaded_by[1], str(run_dir), str(tmp_path))
    _assert_same_state(torch.load(tmp_path / "saved.pt"), torch.load(tmp_path / "loaded.pt"))


def _save_in_background(rank: int, run_dir: str, out: str) -> None:
    from kvideo.train.distributed import cleanup, init_distributed
    from kvideo.train.stream import DataPosition

    env = init_distributed("cpu")
    try:
        model, optimizer = _build(env, sharded=True, seed=0)
        _train(model, optimizer, rank, steps=3)
        at_save = _whole_state(model, optimizer, sharded=True)
        if rank == 0:  # now: its step counts are the optimizer's own tensors, which go on counting
            torch.save(at_save, Path(out) / "saved.pt")
        saver = _checkpointer(run_dir, env, model, optimizer, True, async_save=True)
        saver.save(3, DataPosition(0, 9), {})
        _train(model, optimizer, rank, steps=2)  # while it is being written
        saver.close()
    finally:
        cleanup(env)


def test_a_background_save_holds_the_state_of_its_step_while_training_goes_on(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_ranks(_save_in_background, 2, str(run_dir), str(tmp_path))
    assert (run_dir / "checkpoints" / "step_000003.dcp" / METADATA_NAME).is_file()
    run_ranks(_load, 2, "fsdp", str(run_dir), str(tmp_path))
    _assert_same_state(torch.load(tmp_path / "saved.pt"), torch.load(tmp_path / "loaded.pt"))


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from torch import nn
    from kvideo.config import TrainerConfig
    from kvideo.train.checkpoint_dcp import DCP
    from kvideo.train.checkpointer import Checkpointer
    from kvideo.train.distributed import init_distributed
    from kvideo.train.metrics import RunClock
    from kvideo.train.optim import ScheduledOptimizer
    from kvideo.train.stream import DataPosition

    env = init_distributed("cpu", group_of_one=True)
    model = nn.Linear(2000, 2000, bias=False)  # 16 MB: each save takes a while, so kills land mid-write
    optimizer = ScheduledOptimizer(model, TrainerConfig(lr=1e-3, warmup_steps=0), fused=False)
    saver = Checkpointer(
        Path(sys.argv[1]), env, model=model, optimizer=optimizer, clock=RunClock(), checkpoint_format=DCP
    )
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            model.weight.fill_(step)
        saver.save(step, DataPosition(0, step), {})
        print(step, flush=True)
    """
)


def test_a_kill_during_sharded_saves_never_leaves_a_checkpoint_that_loads_half_written(
    tmp_path: Path,
) -> None:
    """Kill a process that saves sharded checkpoints in a loop at arbitrary moments: the newest
    complete folder always loads, whole and of its own step."""
    from kvideo.train.checkpoint_states import load_dcp_weights

    ckpt_dir = tmp_path / "checkpoints"
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        )
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # at least one complete save
            time.sleep(0.05 + 0.15 * attempt)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        found = newest_checkpoint(ckpt_dir)
        assert found is not None and found.dcp
        model = nn.Linear(2000, 2000, bias=False)
        load_dcp_weights(model, found.path, None)
        assert torch.all(model.weight == found.step), found.path
        # A kill between the rename and the pruning leaves one folder too many: the next commit
        # removes it (test_a_commit_prunes_what_a_killed_one_left).
        assert len(list_dcp_checkpoints(ckpt_dir)) <= KEEP_SHARDED + 1
        assert len(list(ckpt_dir.glob("*.tmp"))) <= 1  # the killed save's, removed by the next one


def test_a_commit_prunes_what_a_killed_one_left(tmp_path: Path) -> None:
    """A save killed after its rename and before its pruning leaves keep + 1 folders; the next
    commit brings them back to ``keep``, the newest ones."""
    for step in (1, 2, 3):  # 3 committed, 1 not yet pruned when the kill came
        folder_for(tmp_path, step).mkdir()
    tmp = tmp_for(folder_for(tmp_path, 4))
    tmp.mkdir()
    commit(tmp, folder_for(tmp_path, 4), keep=KEEP_SHARDED)
    assert [step for step, _ in list_dcp_checkpoints(tmp_path)] == [4, 3]
    assert not tmp.exists()


def _count_calls(module: nn.Module) -> list[int]:
    """A list that grows by one at each run of ``module``'s forward (recomputations included:
    they call ``forward`` directly, without the module's hooks)."""
    calls: list[int] = []
    run = module.forward

    def counted(*args: Any) -> Any:
        calls.append(1)
        return run(*args)

    module.forward = counted
    return calls


def _shard_and_step(rank: int, out: str) -> None:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from kvideo.model.blocks import transformer_blocks
    from kvideo.train.distributed import cleanup, init_distributed
    from kvideo.train.fsdp import apply_fsdp

    env = init_distributed("cpu")
    try:
        results = {}
        for checkpointing in (False, True):
            model: Any
            model, optimizer = _build(env, sharded=True, seed=0, checkpointing=checkpointing)
            blocks = transformer_blocks(model)
            assert len(blocks) == MODEL.vision_depth + MODEL.lm_depth
            assert all(isinstance(m, FSDPModule) for m in [*blocks, model])
            weight = model.lm.blocks[0].mlp.fc1.weight
            assert isinstance(weight, DTensor) and weight.to_local().shape[0] == weight.shape[0] // 2
            calls = _count_calls(model.lm.blocks[0].mlp)
            loss = model(*_batch(torch.Generator().manual_seed(rank)))["loss"]
            loss.backward()
            results[checkpointing] = (float(loss), float(optimizer.gradient_norm()), len(calls))
        (loss, norm, runs), (loss_ac, norm_ac, runs_ac) = results[False], results[True]
        assert (runs, runs_ac) == (1, 2)  # recomputed in the backward pass
        assert loss == loss_ac and norm == pytest.approx(norm_ac, rel=1e-6)

        blockless = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        said = apply_fsdp(blockless, env, units=[], compute_dtype=None, cpu_offload=False)
        if rank == 0:
            Path(out, "said.txt").write_text(said)
    finally:
        cleanup(env)


def test_each_block_is_an_fsdp_unit_recomputed_in_the_backward_with_the_same_gradients(
    tmp_path: Path,
) -> None:
    run_ranks(_shard_and_step, 2, str(tmp_path))
    said = (tmp_path / "said.txt").read_text()
    assert said.startswith("FSDP2: 90 parameters sharded over 2 ranks in one unit (the whole model)")
    assert "has no transformer blocks to shard one by one, so every forward gathers all its" in said
