"""What a checkpoint holds, and how the trainer's state maps to it and back.

``checkpoint.py`` writes and reads the file (atomic, verified, with fallback copies); this
module decides its content::

    step, model, optimizer, scheduler, wall_time_s
    data:  {epoch, samples_in_epoch, world_size}   (samples_in_epoch: per rank)
    ranks: [{rng, skipped}, ...]                   (one entry per rank, in rank order)

The model, optimizer and scheduler are loaded in place; everything else comes back as a
``Resume`` for the components that own it (the step, the data stream's position, the skip
counts), plus this rank's RNG states, which the trainer restores last, once nothing more is
built that would draw from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kvideo.train.checkpoint import (
    CheckpointWriteError,
    capture_rng_state,
    checkpoint_dir,
    load_latest,
    save_checkpoint,
)
from kvideo.train.distributed import DistEnv, all_gather_objects
from kvideo.train.guards import RunFailed
from kvideo.train.metrics import RunClock, now
from kvideo.train.optim import ScheduledOptimizer
from kvideo.train.report import RUN_LOG
from kvideo.train.stream import DataPosition


def trained_subset(model: nn.Module, trained: frozenset[str] | None) -> frozenset[str] | None:
    """``trained``, or ``None`` when it is every parameter (the whole state_dict is saved)."""
    all_params = {name for name, _ in model.named_parameters()}
    return None if trained is None or trained >= all_params else trained


def load_trained_weights(
    model: nn.Module, saved: dict[str, Any], trained: frozenset[str] | None, path: Path
) -> None:
    """Load a checkpoint's weights into ``model``: all of them, or (``trained`` given) the
    trained ones over the pretrained rest, refusing a checkpoint written under another split."""
    if trained is None:
        model.load_state_dict(saved)
        return
    missing = sorted(trained - saved.keys())
    if missing:
        raise RunFailed(
            f"{path} lacks {len(missing)} of the weights this run trains (e.g. {missing[0]!r}): it was "
            "written under another model.freeze / model.freeze_schedule / model.lora_rank"
        )
    unexpected = model.load_state_dict(saved, strict=False).unexpected_keys
    if unexpected:
        raise RunFailed(f"{path} holds weights this model does not have (e.g. {unexpected[0]!r})")


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

    ``save`` is a collective (every rank sends its RNG states and skip counts to rank 0,
    which alone writes); call it at the same steps on every rank.
    """

    def __init__(
        self,
        run_dir: Path,
        env: DistEnv,
        *,
        model: nn.Module,
        optimizer: ScheduledOptimizer,
        clock: RunClock,
        trained: frozenset[str] | None = None,
    ) -> None:
        self.dir = checkpoint_dir(run_dir)
        # Only what trains is saved: a frozen pretrained tower or LM comes back from its folder,
        # so a LoRA run's checkpoint is megabytes, not the LM's gigabytes at every save.
        self.trained = trained_subset(model, trained)
        self.env = env
        self.model = model
        self.optimizer = optimizer
        self.clock = clock
        self.saved_step = -1

    def holds(self, step: int) -> bool:
        """Whether ``step`` is already the newest checkpoint (saved or resumed from)."""
        return self.saved_step == step

    def load(self) -> Resume | None:
        """Resume from ``checkpoints/last.pt`` (or its fallback copies) if there is one."""
        found = load_latest(self.dir, map_location="cpu")
        if found is None:
            return None
        state, path = found
        self._load_model_state(state["model"], path)
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

    def _model_state(self) -> dict[str, Any]:
        state = self.model.state_dict()
        if self.trained is None:
            return state
        return {name: value for name, value in state.items() if name in self.trained}

    def _load_model_state(self, saved: dict[str, Any], path: Path) -> None:
        load_trained_weights(self.model, saved, self.trained, path)

    def save(self, step: int, position: DataPosition, skipped: dict[str, int]) -> None:
        """Checkpoint ``step`` (a collective). A write that fails (full disk) fails the run."""
        rank_entry = {"rng": capture_rng_state(), "skipped": dict(skipped)}
        ranks = all_gather_objects(rank_entry, self.env)
        if self.env.is_main:
            state = {
                "step": step,
                "model": self._model_state(),
                "optimizer": self.optimizer.optimizer.state_dict(),
                "scheduler": self.optimizer.scheduler.state_dict(),
                "data": {
                    "epoch": position.epoch,
                    "samples_in_epoch": position.samples_in_epoch,
                    "world_size": self.env.world_size,
                },
                "ranks": ranks,
                "wall_time_s": self.clock.wall_time(),
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
