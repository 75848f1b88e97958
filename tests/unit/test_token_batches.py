"""``data.batch_tokens``: batches within a token budget, grouped by length, the same number on
every rank, and the same batches after a resume at any batch boundary."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kvideo.data.sharding import ResumableRankSampler
from kvideo.data.token_batches import WINDOW, TokenBudgetBatches, budget_batches, split_to

# A LLaVA-Video-like spread: 64 visual tokens per clip, answers of 1-5 tokens or 100-300.
COST = [
    64 + (1 + int(n) % 5 if n % 3 else 100 + int(n) % 200)
    for n in np.random.default_rng(0).integers(1, 300, 700)
]
BUDGET = 1024


def orders(world: int, epoch: int = 0) -> list[list[int]]:
    return [
        ResumableRankSampler(len(COST), rank=r, world_size=world, seed=5, epoch=epoch, shuffle=True).indices
        for r in range(world)
    ]


def batches_of(world: int, rank: int, *, start: int = 0, epoch: int = 0) -> list[list[int]]:
    sampler = TokenBudgetBatches(
        orders(world, epoch), rank=rank, cost=COST, budget=BUDGET, seed=5, epoch=epoch, start=start
    )
    return list(sampler)


def test_batches_hold_the_budget_and_every_sample_once() -> None:
    batches = batches_of(1, 0)
    assert sorted(i for b in batches for i in b) == sorted(orders(1)[0])
    assert all(sum(COST[i] for i in b) <= BUDGET for b in batches)
    assert len(batches) < len(COST) / 4  # many short clips share a batch
    assert budget_batches([0, 1], [2000, 3], 100) == [[0], [1]]  # over the budget: alone


def test_a_window_groups_similar_lengths_together() -> None:
    window = orders(1)[0][:WINDOW]
    batches = sorted(budget_batches(window, COST, BUDGET), key=lambda b: -max(COST[i] for i in b))
    for longer, shorter in itertools.pairwise(batches):
        assert min(COST[i] for i in longer) >= max(COST[i] for i in shorter)


def test_every_rank_takes_the_same_number_of_steps() -> None:
    per_rank = [batches_of(3, r) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    counts = [len(budget_batches(order[:WINDOW], COST, BUDGET)) for order in orders(3)]
    assert len(set(counts)) > 1  # the ranks' own batching would differ: split_to evened it
    for rank, batches in enumerate(per_rank):
        assert sorted(i for b in batches for i in b) == sorted(orders(3)[rank])
        assert all(sum(COST[i] for i in b) <= BUDGET for b in batches)
    assert split_to([[1, 2, 3], [4]], 3) == [[1], [2, 3], [4]]


def test_a_resume_at_any_batch_boundary_sees_the_same_batches() -> None:
    full = batches_of(2, 1, epoch=3)
    done = 0
    for k, batch in enumerate(full):
        if k % 7 == 0:
            assert batches_of(2, 1, start=done, epoch=3) == full[k:]
        done += len(batch)
    assert batches_of(2, 1, epoch=4) != full  # another epoch, another order
    with pytest.raises(ValueError, match="not at a batch boundary"):
        batches_of(2, 1, start=len(full[0]) + 1, epoch=3)
