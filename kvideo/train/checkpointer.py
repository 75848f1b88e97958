"""What a checkpoint holds, and how the trainer's state maps to it and back.

``checkpoint.py`` writes and reads single-file checkpoints (atomic, verified, with fallback
copies), ``checkpoint_dcp.py`` DCP ones (one folder per step, one file per rank); this
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
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_saver import async_save as dcp_async_save
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from kvideo.errors import one_line
from kvideo.train import checkpoint_dcp
from kvideo.train.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    SINGLE_FILE,
    CheckpointWriteError,
    capture_rng_state,
    checkpoint_dir,
    save_best_checkpoint,
    save_checkpoint,
)
from kvideo.train.checkpoint_dcp import DCP
from kvideo.train.checkpoint_states import (
    create_optimizer_state,
    load_trained_weights,
    named_optimizer_state,
    optimized_names,
    require_weights_match,
    saved_weight_names,
)
from kvideo.train.dcp_reading import load_dcp
from kvideo.train.distributed import DistEnv, all_gather_objects, barrier
from kvideo.train.guards import RunFailed
from kvideo.train.metrics import RunClock, now
from kvideo.train.optim import ScheduledOptimizer
from kvideo.train.report import RUN_LOG
from kvideo.train.stream import DataPosition


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

    ``save`` is a collective (every rank sends its RNG states and skip counts to rank 0; in the
    ``DCP`` format every rank writes its shards); call it at the same steps on every rank.
    ``checkpoint_format``: the strategy's (``kvideo.train.parallel``): ``SINGLE_FILE`` (rank 0
    writes ``last.pt``) or ``DCP`` (one folder per step); ``async_save``: DCP folders are written
    in a background thread (``dcp.async_save``) once copied to host memory, and ``wait()``
    (called by the next save and by ``close()``) returns when one is on disk.
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
        checkpoint_format: str = SINGLE_FILE,
        async_save: bool = False,
        every: int = 0,
        keep_last: int = 2,
    ) -> None:
        self.dir = checkpoint_dir(run_dir)
        # The family's checkpoint keys (``ModelSpec.checkpoint_keys``): what trains, or None for
        # the whole state_dict.
        self.trained = saved_weights
        self.env = env
        self.model = model
        self.optimizer = optimizer
        self.clock = clock
        self.dcp = checkpoint_format == DCP
        self.async_save = async_save and self.dcp
        self.saved_step = -1
        self.every = every  # trainer.ckpt_every; 0 = only the final and preemption checkpoints
        self.keep_last = keep_last  # trainer.keep_last: step checkpoints kept
        self._pending: Future[Any] | None = None
        self._committed = threading.Event()
        # A background save runs its own collectives (DCP's plan and metadata exchange) while
        # training runs the model's: on one process group they would interleave. A gloo group
        # also keeps them off the GPU.
        self._group = dist.new_group(backend="gloo") if self.async_save and dist.is_initialized() else None

    def should_save(self, step: int) -> bool:
        """Whether ``step`` is a periodic checkpoint's (``trainer.ckpt_every``)."""
        return bool(self.every) and step % self.every == 0

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
        if found.dcp:
            self._load_dcp(path, set(state["optimizer_params"]))
        elif self.dcp:
            self._load_whole_into_parts(state, path)
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
            # The ranks' parts are order[rank::world]: the first consumed_global samples of the epoch
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

    def _load_dcp(self, folder: Path, with_state: set[str]) -> None:
        """A DCP folder into the model and optimizer, sharded or whole: each rank reads the
        pieces of the tensors it holds, whatever the world size that wrote them."""
        optimizer = self.optimizer.optimizer
        require_weights_match(saved_weight_names(folder), self.model.state_dict(), self.trained, folder)
        create_optimizer_state(self.model, optimizer, with_state)
        model_state, optim_state = self._state_dicts()
        load_dcp({"model": model_state, "optimizer": optim_state}, folder)
        set_state_dict(
            self.model,
            optimizer,
            model_state_dict=model_state,
            optim_state_dict=optim_state,
            options=StateDictOptions(strict=False),
        )

    def _load_whole_into_parts(self, state: dict[str, Any], path: Path) -> None:
        """A single-file checkpoint (written under ddp) into an FSDP model: every rank reads
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
        best: bool = False,
    ) -> Path:
        """Checkpoint ``step`` (a collective) and return where. A write that fails (full disk)
        fails the run.

        ``wait``: with ``async_save``, return only once this checkpoint is on disk (the last
        one before the process exits). ``rng``: this rank's RNG states as of ``step`` (default:
        now; a checkpoint written after a crash passes those of the last step boundary).
        ``best``: the best validation's checkpoint (``best.pt`` / ``best.dcp``, replaced, on
        disk when this returns), which resume never picks.
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
        if self.dcp:
            folder = (
                checkpoint_dcp.best_folder(self.dir) if best else checkpoint_dcp.folder_for(self.dir, step)
            )
            self._save_dcp(step, trainer_state, folder, wait=wait or best)
            return folder
        path = self.dir / (BEST_NAME if best else LAST_NAME)
        if self.env.is_main:
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
                if best:
                    save_best_checkpoint(self.dir, state)
                else:
                    save_checkpoint(self.dir, state, keep=self.keep_last)
            except CheckpointWriteError as e:
                # Fail clean rather than train on: every later save would fail the same way
                # and a preemption would then lose everything since the last good checkpoint.
                raise RunFailed(f"step {step}: {e}") from None
            what = "best checkpoint" if best else "checkpoint"
            RUN_LOG.info("saved %s step %d -> %s (%.2fs)", what, step, path, now() - t0)
        if not best:
            self.saved_step = step
        return path

    def _save_dcp(self, step: int, trainer_state: dict[str, Any], folder: Path, *, wait: bool) -> None:
        """Every rank writes its shards into ``<folder>.tmp`` (``step_XXXXXX.dcp.tmp``); rank 0
        renames it once DCP's save has returned there (``checkpoint_dcp``)."""
        self.wait()  # one save at a time: the previous background one must be on disk
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
            raise RunFailed(f"step {step}: cannot write the DCP checkpoint {tmp}: {one_line(e)}") from None
        if self.env.is_main:
            checkpoint_dcp.commit(tmp, folder, keep=self.keep_last)
            RUN_LOG.info("saved DCP checkpoint step %d -> %s (%.2fs)", step, folder, now() - t0)
        barrier(self.env)  # every rank returns once the folder is there

    def _optimizer_params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.optimizer.param_groups for p in group["params"]]

    def _commit(self, done: Future[Any], tmp: Path, folder: Path, step: int, t0: float) -> None:
        """Rank 0, in the background writer's thread once its save returned: rename the folder."""
        try:
            if done.exception() is None:
                checkpoint_dcp.commit(tmp, folder, keep=self.keep_last)
                RUN_LOG.info(
                    "saved DCP checkpoint step %d -> %s (%.2fs, in the background)",
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
            raise RunFailed(f"the background checkpoint save failed: {one_line(e)}") from None
        self._committed.wait()

    def close(self) -> None:
        """Wait for the background save in flight; then the checkpointer's process group goes."""
        try:
            self.wait()
        finally:
            if self._group is not None:
                dist.destroy_process_group(self._group)
                self._group = None
