"""What a checkpoint holds, and how the trainer's state maps to it and back.

``checkpoint.py`` writes and reads single-file checkpoints (atomic, verified, with fallback
copies), ``checkpoint_dcp.py`` sharded ones (one folder per step, one file per rank); this
module decides their content::

    step, model, optimizer, scheduler, wall_time_s
    data:  {epoch, samples_in_epoch, world_size}   (samples_in_epoch: per rank)
    ranks: [{rng, skipped}, ...]                   (one entry per rank, in rank order)

``trainer.strategy=ddp`` writes the single file (rank 0 holds every state whole);
``trainer.strategy=fsdp`` writes a DCP folder, each rank its shards of the model and optimizer
states (``torch.distributed.checkpoint.state_dict``'s ``get_state_dict`` / ``set_state_dict``,
which name every state by its parameter's name), the rest in the folder's ``trainer.pt``. Either
strategy resumes from either format, at any world size: the newest checkpoint wins.

The model, optimizer and scheduler are loaded in place; everything else comes back as a
``Resume`` for the components that own it (the step, the data stream's position, the skip
counts), plus this rank's RNG states, which the trainer restores last, once nothing more is
built that would draw from them.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import async_save as dcp_async_save
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from kvideo.train import checkpoint_dcp
from kvideo.train.checkpoint import (
    CheckpointWriteError,
    capture_rng_state,
    checkpoint_dir,
    save_checkpoint,
)
from kvideo.train.distributed import DistEnv, all_gather_objects, barrier
from kvideo.train.guards import RunFailed
from kvideo.train.metrics import RunClock, now
from kvideo.train.optim import ScheduledOptimizer
from kvideo.train.report import RUN_LOG
from kvideo.train.stream import DataPosition

# Sharded checkpoints kept: the newest and one to fall back to (as the single-file copies).
KEEP_SHARDED = 2


def require_weights_match(
    saved: Iterable[str], expected: Iterable[str], trained: frozenset[str] | None, path: Path
) -> None:
    """Refuse a checkpoint that lacks weights this run trains (written under another
    freeze / LoRA split) or holds weights this model does not have."""
    saved, expected = set(saved), set(expected)
    if trained is not None:
        missing = sorted(trained - saved)
        if missing:
            raise RunFailed(
                f"{path} lacks {len(missing)} of the weights this run trains (e.g. {missing[0]!r}): it was "
                "written under another model.freeze / model.freeze_schedule / model.lora_rank"
            )
    unexpected = sorted(saved - expected)
    if unexpected:
        raise RunFailed(f"{path} holds weights this model does not have (e.g. {unexpected[0]!r})")


def load_trained_weights(
    model: nn.Module, saved: dict[str, Any], trained: frozenset[str] | None, path: Path
) -> None:
    """Load a checkpoint's weights into ``model``: all of them, or (``trained`` given) the
    trained ones over the pretrained rest, refusing a checkpoint written under another split."""
    if trained is None:
        model.load_state_dict(saved)
        return
    require_weights_match(saved, model.state_dict(), trained, path)
    model.load_state_dict(saved, strict=False)


def saved_weight_names(folder: Path) -> list[str]:
    """The weights a DCP folder holds (its index's ``model.*`` entries)."""
    index = FileSystemReader(folder).read_metadata().state_dict_metadata
    return [key.removeprefix("model.") for key in index if key.startswith("model.")]


def load_sharded_weights(model: nn.Module, folder: Path, trained: frozenset[str] | None) -> None:
    """A DCP folder's weights into a whole (unsharded) model in this process alone, whatever the
    number of ranks that wrote it (``load_trained_weights``'s counterpart)."""
    require_weights_match(saved_weight_names(folder), model.state_dict(), trained, folder)
    state = {name: value for name, value in model.state_dict().items() if trained is None or name in trained}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process")
        dcp_load({"model": state}, checkpoint_id=folder, no_dist=True)
    model.load_state_dict(state, strict=trained is None)


def optimized_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters, in its order (that of a single-file checkpoint's
    integer ids)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def create_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, names: set[str]) -> None:
    """Give exactly the parameters ``names`` an optimizer state (zeros), so that the state a
    checkpoint holds can be loaded into it.

    ``get_state_dict`` / ``set_state_dict`` make one themselves when the optimizer has none, for
    every parameter that requires grad: a parameter that a later freeze stage trains would
    then come back with a state it never had and start its moments one step late, and DCP
    would look for states the checkpoint does not hold. One step at lr 0 on zero gradients
    leaves every weight as it was (AdamW's decay multiplies by 1 - 0 * weight_decay).
    """
    by_name = dict(
        zip(
            optimized_names(model, optimizer),
            (p for g in optimizer.param_groups for p in g["params"]),
            strict=True,
        )
    )
    unknown = sorted(names - by_name.keys())
    if unknown:
        raise RunFailed(
            "the checkpoint holds optimizer states of parameters this run does not train (e.g. "
            f"{unknown[0]!r}): it was written under another model.freeze / model.freeze_schedule / "
            "model.lora_rank"
        )
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for name in names:
        param = by_name[name]
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def named_optimizer_state(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A single-file checkpoint's optimizer state (integer ids) keyed by parameter name, as
    ``set_optimizer_state_dict`` takes it."""
    groups = state["param_groups"]
    ids = [i for group in groups for i in group["params"]]
    if len(ids) != len(names):
        raise RunFailed(
            f"the checkpoint's optimizer covers {len(ids)} parameters, this run's {len(names)}: it was "
            "written under another model.freeze / model.freeze_schedule / model.lora_rank"
        )
    name_of = dict(zip(ids, names, strict=True))
    return {
        "state": {name_of[i]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [name_of[i] for i in group["params"]]} for group in groups],
    }


@dataclass(frozen=True)
class Resume:
    """What a loaded checkpoint hands back besides the model/optimizer/scheduler states."""

    step: int
    position: DataPosition
    """This rank's data position, converted to this run's world size."""
    skipped: dict[str, int]
    """Skip counts to continue from: this rank's own, or after a world-size change the sum
    over the old ranks on rank 0 (and none elsewhere), so the global total is kept."""
    rng: dict[str, Any] | None
    """This rank's RNG states; ``None`` after a world-size change (streams cannot be mapped)."""


class Checkpointer:
    """Saves and restores one run's training state in ``<run_dir>/checkpoints/``.

    ``save`` is a collective (every rank sends its RNG states and skip counts to rank 0; with
    ``sharded``, every rank writes its shards); call it at the same steps on every rank.
    ``sharded``: the model is FSDP-sharded, checkpoints are DCP folders; ``async_save``: those
    are written in a background thread (``dcp.async_save``) once copied to host memory, and
    ``wait()`` (called by the next save and by ``close()``) returns when one is on disk.
    """

    def __init__(
        self,
        run_dir: Path,
        env: DistEnv,
        *,
        model: nn.Module,
        optimizer: ScheduledOptimizer,
        clock: RunClock,
        saved_weights: frozenset[str] | None = None,
        sharded: bool = False,
        async_save: bool = False,
    ) -> None:
        self.dir = checkpoint_dir(run_dir)
        # The family's checkpoint keys (``ModelSpec.checkpoint_keys``): what trains, or None for
        # the whole state_dict.
        self.trained = saved_weights
        self.env = env
        self.model = model
        self.optimizer = optimizer
        self.clock = clock
        self.sharded = sharded
        self.async_save = async_save and sharded
        self.saved_step = -1
        self._pending: Future[Any] | None = None
        self._committed = threading.Event()
        # A background save runs its own collectives (DCP's plan and metadata exchange) while
        # training runs the model's: on one process group they would interleave. A gloo group
        # also keeps them off the GPU.
        self._group = dist.new_group(backend="gloo") if self.async_save and dist.is_initialized() else None

    def holds(self, step: int) -> bool:
        """Whether ``step`` is already the newest checkpoint (saved or resumed from)."""
        return self.saved_step == step

    # ------------------------------------------------------------------ loading

    def load(self) -> Resume | None:
        """Resume from the newest checkpoint, of either format, if there is one."""
        found = checkpoint_dcp.newest_checkpoint(self.dir)
        if found is None:
            return None
        state, path = found.state, found.path
        if found.sharded:
            self._load_sharded(path, set(state["optimizer_params"]))
        elif self.sharded:
            self._load_whole_into_shards(state, path)
        else:
            load_trained_weights(self.model, state["model"], self.trained, path)
            self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        self.saved_step = step
        self.clock.prior_wall_s = float(state.get("wall_time_s", 0.0))
        data = state["data"]
        epoch = int(data["epoch"])
        saved_world = int(data["world_size"])
        consumed_global = int(data["samples_in_epoch"]) * saved_world
        position = DataPosition(epoch, consumed_global // self.env.world_size)
        ranks = state["ranks"]
        if saved_world == self.env.world_size:
            rank_state = ranks[self.env.rank]
            rng, skipped = rank_state["rng"], dict(rank_state["skipped"])
        else:
            # Shards are order[rank::world]: the first consumed_global samples of the epoch
            # order are done whatever the world size, so the position converts exactly when
            # divisible. RNG streams are per rank and cannot be mapped: fresh seeds.
            RUN_LOG.warning(
                "checkpoint was written by %d processes, this run has %d: data position converted "
                "(%d samples of epoch %d), per-rank RNG states not restored",
                saved_world,
                self.env.world_size,
                consumed_global,
                epoch,
            )
            rng, skipped = None, {}
            if self.env.is_main:
                for r in ranks:
                    for k, v in r["skipped"].items():
                        skipped[k] = skipped.get(k, 0) + int(v)
        if self.env.is_main:
            RUN_LOG.info(
                "resuming from step %d (%s, epoch %d, %d samples into it)",
                step,
                path,
                epoch,
                position.samples_in_epoch,
            )
        return Resume(step=step, position=position, skipped=skipped, rng=rng)

    def _load_sharded(self, folder: Path, with_state: set[str]) -> None:
        """A DCP folder into the model and optimizer, sharded or whole: each rank reads the
        pieces of the tensors it holds, whatever the world size that wrote them."""
        optimizer = self.optimizer.optimizer
        require_weights_match(saved_weight_names(folder), self.model.state_dict(), self.trained, folder)
        create_optimizer_state(self.model, optimizer, with_state)
        model_state, optim_state = self._state_dicts()
        dcp_load({"model": model_state, "optimizer": optim_state}, checkpoint_id=folder)
        set_state_dict(
            self.model,
            optimizer,
            model_state_dict=model_state,
            optim_state_dict=optim_state,
            options=StateDictOptions(strict=False),
        )

    def _load_whole_into_shards(self, state: dict[str, Any], path: Path) -> None:
        """A single-file checkpoint (written under ddp) into a sharded model: every rank reads
        the whole file and keeps its shards."""
        optimizer = self.optimizer.optimizer
        saved = state["model"]
        require_weights_match(saved, self.model.state_dict(), self.trained, path)
        whole = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(self.model, saved, options=whole)
        named = named_optimizer_state(state["optimizer"], optimized_names(self.model, optimizer))
        create_optimizer_state(self.model, optimizer, set(named["state"]))
        set_optimizer_state_dict(self.model, optimizer, named, options=StateDictOptions(full_state_dict=True))

    def _state_dicts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model's saved part and the optimizer's state, by parameter name (DTensor shards
        under FSDP)."""
        model_state, optim_state = get_state_dict(self.model, self.optimizer.optimizer)
        if self.trained is not None:
            model_state = {name: value for name, value in model_state.items() if name in self.trained}
        return model_state, optim_state

    # ------------------------------------------------------------------ saving

    def save(
        self,
        step: int,
        position: DataPosition,
        skipped: dict[str, int],
        *,
        wait: bool = False,
        rng: dict[str, Any] | None = None,
    ) -> None:
        """Checkpoint ``step`` (a collective). A write that fails (full disk) fails the run.

        ``wait``: with ``async_save``, return only once this checkpoint is on disk (the last
        one before the process exits). ``rng``: this rank's RNG states as of ``step`` (default:
        now; a checkpoint written after a crash passes those of the last step boundary).
        """
        rank_entry = {"rng": capture_rng_state() if rng is None else rng, "skipped": dict(skipped)}
        trainer_state = {
            "step": step,
            "scheduler": self.optimizer.scheduler.state_dict(),
            "data": {
                "epoch": position.epoch,
                "samples_in_epoch": position.samples_in_epoch,
                "world_size": self.env.world_size,
            },
            "ranks": all_gather_objects(rank_entry, self.env),
            "wall_time_s": self.clock.wall_time(),
        }
        if self.sharded:
            self._save_sharded(step, trainer_state, wait=wait)
        elif self.env.is_main:
            model_state = self.model.state_dict()
            if self.trained is not None:
                model_state = {name: value for name, value in model_state.items() if name in self.trained}
            state = {
                **trainer_state,
                "model": model_state,
                "optimizer": self.optimizer.optimizer.state_dict(),
            }
            t0 = now()
            try:
                path = save_checkpoint(self.dir, state)
            except CheckpointWriteError as e:
                # Fail clean rather than train on: every later save would fail the same way
                # and a preemption would then lose everything since the last good checkpoint.
                raise RunFailed(f"step {step}: {e}") from None
            RUN_LOG.info("saved checkpoint step %d -> %s (%.2fs)", step, path, now() - t0)
        self.saved_step = step

    def _save_sharded(self, step: int, trainer_state: dict[str, Any], *, wait: bool) -> None:
        """Every rank writes its shards into ``step_XXXXXX.dcp.tmp``; rank 0 renames it once
        DCP's save has returned there (``checkpoint_dcp``)."""
        self.wait()  # one save at a time: the previous background one must be on disk
        folder = checkpoint_dcp.folder_for(self.dir, step)
        tmp = checkpoint_dcp.tmp_for(folder)
        optimizer = self.optimizer.optimizer
        t0 = now()
        if self.env.is_main:
            try:
                checkpoint_dcp.prepare_tmp(folder)
            except OSError as e:
                raise RunFailed(f"step {step}: cannot create {tmp}: {e}") from None
        barrier(self.env)  # nobody writes into a folder rank 0 is still clearing
        model_state, optim_state = self._state_dicts()
        state = {"model": model_state, "optimizer": optim_state}
        trainer_state["optimizer_params"] = sorted(
            name
            for name, p in zip(optimized_names(self.model, optimizer), self._optimizer_params(), strict=True)
            if optimizer.state.get(p)
        )
        if self.env.is_main:
            checkpoint_dcp.write_trainer_state(tmp, trainer_state)
        if self.async_save:
            self._committed.clear()
            # A Future with the default (synchronous, host-memory) staging; the response object
            # only comes with an asynchronous stager.
            future = cast(Future[Any], dcp_async_save(state, checkpoint_id=tmp, process_group=self._group))
            if self.env.is_main:
                future.add_done_callback(lambda done: self._commit(done, tmp, folder, step, t0))
            else:
                self._committed.set()
            self._pending = future
            if wait:
                self.wait()
            return
        try:
            dcp_save(state, checkpoint_id=tmp)
        except Exception as e:  # DCP gathers every rank's write errors and raises them on all
            if self.env.is_main:  # a partial folder on a full disk only makes it fuller
                shutil.rmtree(tmp, ignore_errors=True)
            raise RunFailed(
                f"step {step}: cannot write the sharded checkpoint {tmp}: {_first_line(e)}"
            ) from None
        if self.env.is_main:
            checkpoint_dcp.commit(tmp, folder, keep=KEEP_SHARDED)
            RUN_LOG.info("saved sharded checkpoint step %d -> %s (%.2fs)", step, folder, now() - t0)
        barrier(self.env)  # every rank returns once the folder is there

    def _optimizer_params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.optimizer.param_groups for p in group["params"]]

    def _commit(self, done: Future[Any], tmp: Path, folder: Path, step: int, t0: float) -> None:
        """Rank 0, in the background writer's thread once its save returned: rename the folder."""
        try:
            if done.exception() is None:
                checkpoint_dcp.commit(tmp, folder, keep=KEEP_SHARDED)
                RUN_LOG.info(
                    "saved sharded checkpoint step %d -> %s (%.2fs, in the background)",
                    step,
                    folder,
                    now() - t0,
                )
        finally:
            self._committed.set()

    def wait(self) -> None:
        """Return once the background save in flight, if any, is on disk (every rank)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except Exception as e:
            raise RunFailed(f"the background checkpoint save failed: {_first_line(e)}") from None
        self._committed.wait()

    def close(self) -> None:
        """Wait for the background save in flight; then the checkpointer's process group goes."""
        try:
            self.wait()
        finally:
            if self._group is not None:
                dist.destroy_process_group(self._group)
                self._group = None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
