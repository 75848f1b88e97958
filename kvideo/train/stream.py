"""This rank's training batches, epoch after epoch, resumable at any sample.

The position in the stream is ``DataPosition(epoch, samples_in_epoch)``: the loader's order
depends only on (seed, epoch), so a restarted run that opens the epoch after the same number
of samples sees exactly the batches the uninterrupted run would have seen.

Fetching a batch leaves the global torch RNG as it was: a restart opens one loader more than
the uninterrupted run did, and anything that drew from the global RNG there would shift the
stream that dropout draws from. The loaders draw their workers' base seed from a generator of
their own (``kvideo.data.loader``), on the CPU path and on the GPU path's prefetch thread
alike; ``rng_neutral`` around opening and fetching also undoes any other draw made in this
process while it runs. Validation opens loaders too and uses the same guard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from kvideo.train.distributed import DistEnv


@contextlib.contextmanager
def rng_neutral() -> Iterator[None]:
    """Restore the global CPU torch RNG after the block (see the module docstring)."""
    state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(state)


@dataclass(frozen=True)
class DataPosition:
    """Where this rank is in the data: what a checkpoint stores to resume the stream."""

    epoch: int
    samples_in_epoch: int
    """Samples of ``epoch`` this rank has consumed (skipped ones included)."""


class EpochStream:
    """``next_batch()`` forever: full batches of this rank's part of the dataset, epoch after epoch:
    ``batch_size`` clips, or batches of ``data.batch_tokens`` tokens (the dataset's own
    ``ClipSettings``, which also say the decoder and the worker count)."""

    def __init__(self, dataset: Any, env: DistEnv, *, batch_size: int) -> None:
        self.dataset, self.env = dataset, env
        settings = dataset.settings
        self.batch_size = batch_size
        self.batch_tokens = settings.data.batch_tokens
        self.epoch = 0
        self.samples_in_epoch = 0
        from kvideo.data.loader import prefetches_in_process

        # Opening the next epoch early needs worker processes: they hold their own copy of
        # the dataset (and its epoch), whereas in-process loading (no workers, or GPU
        # decoding in the training process) would see the next epoch's sampling seed too early.
        self.opens_next_epoch_early = settings.num_workers > 0 and not prefetches_in_process(settings.decoder)
        self._batches: Iterator[dict[str, Any]] | None = None
        self._next_epoch: Iterator[dict[str, Any]] | None = None  # opened early, see next_batch

    @property
    def position(self) -> DataPosition:
        return DataPosition(self.epoch, self.samples_in_epoch)

    def resume_at(self, position: DataPosition) -> None:
        """Continue from a checkpoint's position (before the first ``next_batch``)."""
        self.epoch = position.epoch
        self.samples_in_epoch = position.samples_in_epoch

    def next_batch(self) -> dict[str, Any]:
        """The next training batch, moving to the next epoch when this one is exhausted."""
        fresh_epoch = False
        while True:
            if self._batches is None:
                if self._next_epoch is not None and self.samples_in_epoch == 0:
                    self._batches, self._next_epoch = self._next_epoch, None
                else:
                    self._batches = self._open_epoch(self.epoch, self.samples_in_epoch)
                fresh_epoch = self.samples_in_epoch == 0
            with rng_neutral():
                batch = next(self._batches, None)
            if batch is not None:
                self.samples_in_epoch += len(batch["skip_reason"])
                self._open_next_epoch_early()
                return batch
            self._batches = None
            if fresh_epoch:
                raise RuntimeError(
                    f"the train split yields no full batch: {len(self.dataset)} clips < "
                    f"trainer.batch_size ({self.batch_size}) x processes ({self.env.world_size})"
                )
            self.epoch += 1
            self.samples_in_epoch = 0

    def close(self) -> None:
        """Drop the loader iterators (and with them their worker processes)."""
        self._batches = None
        self._next_epoch = None

    def _open_epoch(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        from kvideo.data.loader import build_loader

        with rng_neutral():
            return build_loader(
                self.dataset,
                rank=self.env.rank,
                world_size=self.env.world_size,
                epoch=epoch,
                start_sample=start,
                shuffle=True,
                batch_size=self.batch_size,
                batch_tokens=self.batch_tokens,
                drop_last=True,
                device=self.env.device,
            )

    def _open_next_epoch_early(self) -> None:
        """Start the next epoch's workers while this epoch's last batches train.

        Without it every epoch boundary waits for worker start-up and a full prefetch: on the
        embedded default (50 batches an epoch) that was ~10% data wait in those windows.
        """
        if self._next_epoch is not None or not self.opens_next_epoch_early:
            return
        per_epoch = len(self.dataset) // self.env.world_size // self.batch_size
        if per_epoch - self.samples_in_epoch // self.batch_size <= 1:
            self._next_epoch = self._open_epoch(self.epoch + 1, 0)
