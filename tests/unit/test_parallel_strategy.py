"""``kvideo.train.parallel``: ``trainer.strategy`` is an object that owns wrapping, gradient sync
and the checkpoint format; one process shows the contract (the 2-rank behaviour is in the DDP and
FSDP integration tests)."""

from __future__ import annotations

import torch
from torch import nn

from kvideo.config.trainer import STRATEGIES as STRATEGY_CHOICES
from kvideo.train.checkpoint import SINGLE_FILE
from kvideo.train.checkpoint_dcp import DCP
from kvideo.train.distributed import DistEnv
from kvideo.train.parallel import STRATEGIES, Partitioned, Replicated, strategy_class

ONE_PROCESS = DistEnv(0, 0, 1, torch.device("cpu"), True, None, False)


def test_every_config_choice_is_a_strategy_class() -> None:
    assert sorted(STRATEGIES) == sorted(STRATEGY_CHOICES)
    assert strategy_class("ddp") is Replicated and strategy_class("fsdp") is Partitioned


def test_ddp_keeps_the_single_file_checkpoint_and_fsdp_writes_dcp_folders() -> None:
    assert (Replicated.checkpoint_format, Partitioned.checkpoint_format) == (SINGLE_FILE, DCP)
    assert (Replicated.needs_process_group, Partitioned.needs_process_group) == (False, True)


def test_replicated_on_one_process_trains_the_model_itself_with_nothing_to_synchronise() -> None:
    model = nn.Linear(2, 2)
    strategy = Replicated(ONE_PROCESS)
    assert strategy.prepare(model, units=[], compute_dtype=None, cpu_offload=False) is None
    assert strategy.wrap(model) is model
    assert not strategy.lockstep_forwards and strategy.state_parts == 1
    with strategy.gradient_sync(False):
        model(torch.ones(1, 2)).sum().backward()
    assert model.weight.grad is not None
    assert strategy.whole_model(model, run_dir=None) is model  # type: ignore[arg-type]
