"""A deterministic, resumable sample order, split over the ranks. ("Shard" here, as everywhere in
kvideo, is a tar file of samples; a rank's share of an epoch is its part.)

The order of an epoch depends only on (seed, epoch) and each rank's part on (rank,
world_size): never on worker count or wall-clock, so a run resumed at "epoch e, n
samples consumed" yields exactly the batches an uninterrupted run would have.

Two orders, chosen by the dataset:

* map-style files (``epoch_order``): one permutation of every sample; rank ``r`` takes every
  ``world_size``-th sample of it, starting at ``r``.
* tar shards (``stream_order`` over a ``ShardLayout``): read the way a streaming loader reads
  them, for locality on the file system. The shards are visited in a (seed, epoch)
  permutation, each shard's samples in file order, and that stream passes through a shuffle
  buffer of ``ShardLayout.buffer`` sample references (seeded by (seed, epoch) too): the buffer
  fills up, then each step emits a uniformly drawn slot and the next sample takes its place; at
  the end the buffer drains in random order. A sample therefore leaves at most a buffer's
  length away from where the stream brought it, and ranks read runs of neighbouring shards.
  Rank ``r`` takes the ``r``-th of ``world_size`` contiguous, equally long pieces of that
  order, so the shards are split across ranks (whole shards, except where a piece starts or
  ends inside one) and every rank takes the same number of steps however unequal the shards.
  Unshuffled (validation), the order is the files' and ranks take every ``world_size``-th sample
  as for map-style files: ``kvideo.train.evaluate`` tells the wrapped padding apart by that stride.

Either way, ``drop_last`` cuts the order to a multiple of ``world_size`` (at most
``world_size - 1`` samples of the epoch are left out, which ones changes with the epoch) and
otherwise pads it by wrapping around, like PyTorch's ``DistributedSampler``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch.utils.data import Sampler


def epoch_order(num_samples: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The global visiting order of one epoch (before the split over the ranks)."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


@dataclass(frozen=True)
class ShardLayout:
    """How a dataset's samples lie in tar shards, for ``stream_order``.

    sizes: ``sizes[k]`` samples of shard ``k``; shard ``k`` holds the dataset indices that
        follow shard ``k - 1``'s, in file order.
    buffer: the shuffle buffer's length in samples (``data.shuffle_buffer``); 1 keeps each
        shard's file order and only shuffles the shards.
    """

    sizes: tuple[int, ...]
    buffer: int

    def __post_init__(self) -> None:
        if self.buffer < 1:
            raise ValueError(f"the shuffle buffer holds at least 1 sample (got {self.buffer})")
        if any(size < 0 for size in self.sizes):
            raise ValueError(f"shard sizes must be non-negative (got {self.sizes})")

    @property
    def num_samples(self) -> int:
        return sum(self.sizes)

    def order(self, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """This layout's visiting order of one epoch (``stream_order``)."""
        return stream_order(self, seed=seed, epoch=epoch, shuffle=shuffle)


class SampleLayout(Protocol):
    """How a dataset's samples are grouped, when it is not one flat list of files: tar shards
    (``ShardLayout``) or the sources of a mixture (``kvideo.data.mixture.MixtureLayout``). Its
    shuffled order is split over the ranks in contiguous pieces, which keeps a rank's reads
    local; unshuffled, by stride, as files are."""

    @property
    def num_samples(self) -> int: ...

    def order(self, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray: ...


def stream_order(layout: ShardLayout, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The global visiting order of one epoch of a sharded dataset (before the rank split; the
    rules are in the module docstring). Without ``shuffle``: file order, shard after shard."""
    return keyed_stream_order(layout, (seed, epoch) if shuffle else None)


# Memoized: a worker restart (kvideo.data.watchdog) and the early-opened next epoch rebuild a
# sampler, and the buffer walk is a Python loop (~0.5 s per million samples).
@functools.lru_cache(maxsize=4)
def keyed_stream_order(layout: ShardLayout, key: tuple[int, ...] | None) -> np.ndarray:
    """``stream_order`` with its random numbers drawn from ``key`` (file order when ``None``): a
    mixture reads each of its sharded sources with its own key per pass."""
    total = layout.num_samples
    if key is None:
        order = np.arange(total)
    else:
        starts = np.concatenate([[0], np.cumsum(layout.sizes)[:-1]]).astype(np.int64)
        rng = np.random.default_rng(list(key))
        shards = rng.permutation(len(layout.sizes))
        stream = [range(starts[k], starts[k] + layout.sizes[k]) for k in shards.tolist()]
        # One uniform draw per emitted sample, scaled by the buffer's fill at that step.
        draws = rng.random(total)
        order = np.empty(total, dtype=np.int64)
        buffer: list[int] = []
        emitted = 0
        for shard in stream:
            for index in shard:
                buffer.append(index)
                if len(buffer) == layout.buffer:
                    emitted = _emit(buffer, draws[emitted], order, emitted)
        while buffer:
            emitted = _emit(buffer, draws[emitted], order, emitted)
    order.flags.writeable = False  # shared by every caller of the cache
    return order


def _emit(buffer: list[int], draw: float, order: np.ndarray, emitted: int) -> int:
    """Move a slot picked by ``draw`` (uniform in [0, 1)) from ``buffer`` to ``order[emitted]``;
    the buffer's last entry fills the hole."""
    slot = int(draw * len(buffer))
    order[emitted] = buffer[slot]
    buffer[slot] = buffer[-1]
    buffer.pop()
    return emitted + 1


class ResumableRankSampler(Sampler[int]):
    """This rank's indices for one epoch, starting after the first ``start`` (already consumed).

    With ``drop_last`` the global order is cut to a multiple of ``world_size`` so the
    ranks' parts are disjoint; otherwise it is padded by wrapping around (like PyTorch's
    DistributedSampler) so every rank gets the same count. ``layout`` (tar shards, a mixture)
    gives the order and selects contiguous pieces per rank (module docstring).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        start: int = 0,
        drop_last: bool = True,
        layout: SampleLayout | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}) (got {rank})")
        if layout is None:
            order = epoch_order(num_samples, seed=seed, epoch=epoch, shuffle=shuffle)
        elif layout.num_samples != num_samples:
            raise ValueError(f"the shard layout holds {layout.num_samples} samples, not {num_samples}")
        else:
            order = layout.order(seed=seed, epoch=epoch, shuffle=shuffle)
        if drop_last:
            order = order[: len(order) - len(order) % world_size]
        elif len(order) % world_size:
            pad = world_size - len(order) % world_size
            order = np.concatenate([order, np.resize(order, pad)])
        if layout is None or not shuffle:
            # Unshuffled (validation): every world_size-th sample, as kvideo.train.evaluate counts
            # the wrapped padding by that stride.
            mine = order[rank::world_size]
        else:
            piece = len(order) // world_size
            mine = order[rank * piece : (rank + 1) * piece]
        self.indices = mine[start:].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
