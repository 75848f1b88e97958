"""How the ranks share the model: ``trainer.strategy`` as an object (torchtitan's ``ParallelDims``
and ``parallelize_fn`` are the model). A strategy owns the four things that differ between data
parallelism and sharding, so the trainer, the checkpointer and the validator ask it instead of
testing a flag:

* wrapping: ``prepare`` (FSDP2 shards the model in place, before the optimizer sees it) and
  ``wrap`` (DDP around the model, rebuilt at each freeze stage);
* gradient sync: ``gradient_sync(last)`` around a micro-batch's backward;
* the checkpoint format: ``checkpoint_format`` (see below);
* whole weights for an export: ``whole_model``.

Two checkpoint formats stay, by decision. DCP could serve both strategies (it does at one rank),
but its index (``.metadata``) is a pickle, and loading a folder someone else wrote runs whatever
that pickle says. A single file loads with ``torch.load(weights_only=True)``, which only ever
builds tensors and plain values, and it is written with verified fallback copies. Under ``ddp``
rank 0 holds every state whole, so the single file costs nothing, and that safety is kept for
every run that does not shard. Under ``fsdp`` no rank holds the whole model, and the DCP folder is
the only format that does not gather it. Either strategy resumes from either format
(``kvideo.train.checkpointer``), so ``last.pt`` files written before this keep loading.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from kvideo.train.checkpoint import SINGLE_FILE
from kvideo.train.checkpoint_dcp import DCP
from kvideo.train.distributed import DistEnv, wrap_model
from kvideo.train.fsdp import apply_fsdp, sync_gradients


class Strategy:
    """What every strategy answers; ``Replicated`` and ``Partitioned`` are the two there are."""

    name: ClassVar[str]
    needs_process_group: ClassVar[bool] = False
    """Whether one process needs a process group too (FSDP2 shards over a device mesh)."""
    checkpoint_format: ClassVar[str]
    """``SINGLE_FILE`` or ``DCP`` (see the module docstring)."""

    def __init__(self, env: DistEnv) -> None:
        self.env = env

    @property
    def lockstep_forwards(self) -> bool:
        """Whether every forward is a collective: all ranks must then run the same forwards
        (validation and generation in lockstep)."""
        return False

    @property
    def state_parts(self) -> int:
        """Into how many parts the model states (weights, gradients, optimizer) are split."""
        return 1

    def prepare(
        self,
        model: nn.Module,
        *,
        units: list[nn.Module],
        compute_dtype: torch.dtype | None,
        cpu_offload: bool,
    ) -> str | None:
        """Change ``model`` in place before the optimizer and the checkpointer see it; returns a
        line for the log, or ``None`` when there was nothing to do."""
        return None

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls, for the parameters that train now."""
        return model

    def release(self) -> None:
        """Drop what holds the process group (before it is destroyed)."""

    def gradient_sync(self, last: bool) -> AbstractContextManager[None]:
        """Around a micro-batch's forward and backward: gradients are synchronised across the
        ranks on the ``last`` micro-batch of a step only."""
        return contextlib.nullcontext()

    def whole_model(self, model: nn.Module, run_dir: Path) -> nn.Module:
        """The model with all its weights in this process (rank 0, for an export)."""
        return model


class Replicated(Strategy):
    """``trainer.strategy=ddp``: every rank holds the whole model; DDP all-reduces gradients."""

    name = "ddp"
    checkpoint_format = SINGLE_FILE

    def __init__(self, env: DistEnv) -> None:
        super().__init__(env)
        self._ddp: nn.parallel.DistributedDataParallel | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP registers its gradient hooks on the parameters that require grad when it is
        built, so a freeze stage that changes them wraps again."""
        wrapped = wrap_model(model, self.env)
        self._ddp = wrapped if isinstance(wrapped, nn.parallel.DistributedDataParallel) else None
        return wrapped

    def release(self) -> None:
        """DDP's reducer holds the process group, and a gloo group destroyed last by the reducer's
        destructor can wait forever on its worker threads (a rank that never exits)."""
        self._ddp = None

    def gradient_sync(self, last: bool) -> AbstractContextManager[None]:
        if self._ddp is None or last:
            return contextlib.nullcontext()
        return self._ddp.no_sync()


class Partitioned(Strategy):
    """``trainer.strategy=fsdp``: FSDP2 shards weights, gradients and optimizer states over the
    ranks (``kvideo.train.fsdp``)."""

    name = "fsdp"
    needs_process_group = True
    checkpoint_format = DCP

    def __init__(self, env: DistEnv) -> None:
        super().__init__(env)
        self._model: nn.Module | None = None

    @property
    def lockstep_forwards(self) -> bool:
        return self.env.distributed

    @property
    def state_parts(self) -> int:
        return self.env.world_size

    def prepare(
        self,
        model: nn.Module,
        *,
        units: list[nn.Module],
        compute_dtype: torch.dtype | None,
        cpu_offload: bool,
    ) -> str | None:
        self._model = model
        return apply_fsdp(model, self.env, units=units, compute_dtype=compute_dtype, cpu_offload=cpu_offload)

    def gradient_sync(self, last: bool) -> AbstractContextManager[None]:
        """FSDP2 reads ``requires_gradient_sync`` at the backward (DDP's ``no_sync``)."""
        if self._model is not None:
            sync_gradients(self._model, last)
        return contextlib.nullcontext()

    def whole_model(self, model: nn.Module, run_dir: Path) -> nn.Module:
        """The whole weights exist on no rank: rebuild the model on the CPU from the run's final
        (sharded) checkpoint, as ``python -m kvideo.export`` does; no rank gathers them."""
        from kvideo.train.restore import load_trained

        return load_trained(run_dir, device="cpu").model


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Replicated, Partitioned)}


def strategy_class(name: str) -> type[Strategy]:
    """The class of ``trainer.strategy`` (a checked config names one of ``STRATEGIES``)."""
    return STRATEGIES[name]
