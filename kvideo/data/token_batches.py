"""Token-budget batches (``data.batch_tokens``): batches that hold up to a number of tokens rather
than a number of clips, grouped by length, so every step costs about the same and memory is
bounded by the budget (LLaVA's ``group_by_modality_length`` is the peer).

A sample's cost is known before it is decoded: with ``data.packing`` its text tokens (tokenized
once, ``text_len``) plus the most visual tokens its frames can give (``video.max_frames`` times
the per-frame bound), an upper bound, so a batch never exceeds the budget; unpacked, every sample
costs the padded length, which the model computes whatever the text.

Each rank's stream (``ResumableRankSampler``'s order) is cut into windows of ``WINDOW`` samples.
A window's samples are sorted by cost (longest first) and cut into batches within the budget, and
the batches are put in an order drawn from (seed, epoch, window). Every rank makes the same
number of batches from a window: each rank computes every rank's batches (the orders are
functions of the seed alone) and splits its largest batches until it has as many as the rank
with the most, so DDP and FSDP ranks take the same number of steps per epoch and never wait on
one another at an epoch's end.

Resume is exact: the position is kept in samples (``DataPosition``); a window's batches are a
function of the window, so the batches after ``start`` samples are found by making the windows
again and skipping batches until ``start`` samples are behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

WINDOW = 256  # samples of one rank's stream grouped by length at a time


def budget_batches(window: Sequence[int], cost: Sequence[int], budget: int) -> list[list[int]]:
    """``window``'s samples longest first, cut into consecutive batches of at most ``budget``
    (a sample over the budget is a batch of its own)."""
    batches: list[list[int]] = []
    used = budget + 1
    for i in sorted(window, key=lambda i: -cost[i]):
        if used + cost[i] > budget:
            batches.append([])
            used = 0
        batches[-1].append(i)
        used += cost[i]
    return batches


def split_to(batches: list[list[int]], count: int) -> list[list[int]]:
    """``batches`` with their largest (most samples) halved until there are ``count``: a rank
    with fewer batches in a window than another rank's takes as many steps, each cheaper."""
    batches = [list(b) for b in batches]
    while len(batches) < count:
        largest = max(range(len(batches)), key=lambda b: (len(batches[b]), -b))
        batch = batches[largest]
        if len(batch) < 2:
            raise ValueError(f"cannot make {count} batches of {sum(map(len, batches))} samples")
        half = len(batch) // 2
        batches[largest : largest + 1] = [batch[:half], batch[half:]]
    return batches


class TokenBudgetBatches(Sampler[list[int]]):
    """This rank's batches of one epoch (see the module docstring), from after its first ``start``
    samples. ``orders``: every rank's full order for the epoch (equal lengths); ``cost``: each
    sample's tokens. Windows are batched as they are read, so opening an epoch of a large corpus
    costs no more than its first window."""

    def __init__(
        self,
        orders: Sequence[Sequence[int]],
        *,
        rank: int,
        cost: Sequence[int],
        budget: int,
        seed: int,
        epoch: int,
        start: int = 0,
    ) -> None:
        self.orders, self.rank, self.cost, self.budget = orders, rank, cost, budget
        self.seed, self.epoch, self.start = seed, epoch, start

    def window(self, w: int) -> list[list[int]]:
        """This rank's batches of window ``w``, in their drawn order."""
        begin = w * WINDOW
        per_rank = [
            budget_batches(order[begin : begin + WINDOW], self.cost, self.budget) for order in self.orders
        ]
        batches = split_to(per_rank[self.rank], max(len(b) for b in per_rank))
        shuffle = np.random.default_rng([self.seed, self.epoch, w]).permutation(len(batches))
        return [batches[j] for j in shuffle]

    def __iter__(self) -> Iterator[list[int]]:
        first = self.start // WINDOW  # a window's batches hold exactly its samples
        skip = self.start - first * WINDOW
        for w in range(first, -(-len(self.orders[self.rank]) // WINDOW)):
            for batch in self.window(w):
                if skip <= 0:
                    yield batch
                    continue
                skip -= len(batch)
                if skip < 0:
                    raise ValueError(
                        f"the data position ({self.start} samples into epoch {self.epoch}) is not at a "
                        "batch boundary of data.batch_tokens' batches: was it written with other data "
                        "settings?"
                    )

    def __len__(self) -> int:
        """Batches left in the epoch (batches every window: call it rarely)."""
        return sum(1 for _ in self)
