"""A deterministic, resumable, rank-sharded sample order.

The order of an epoch depends only on (seed, epoch) and the shard on (rank,
world_size): never on worker count or wall-clock, so a run resumed at "epoch e, n
samples consumed" yields exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def epoch_order(num_samples: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The global visiting order of one epoch (before sharding)."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class ResumableShardSampler(Sampler[int]):
    """This rank's indices for one epoch, starting after ``skip`` already consumed.

    With ``drop_last`` the global order is cut to a multiple of ``world_size`` so the
    shards are disjoint; otherwise it is padded by wrapping around (like PyTorch's
    DistributedSampler) so every rank gets the same count.
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
        skip: int = 0,
        drop_last: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}) (got {rank})")
        order = epoch_order(num_samples, seed=seed, epoch=epoch, shuffle=shuffle)
        if drop_last:
            order = order[: len(order) - len(order) % world_size]
        elif len(order) % world_size:
            pad = world_size - len(order) % world_size
            order = np.concatenate([order, np.resize(order, pad)])
        self.indices = order[rank::world_size][skip:].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
