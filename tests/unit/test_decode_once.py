"""``DecodeOnce``: the first read decodes and keeps what fits in the cap, later reads replay the
kept prefix and decode only the rest, from the first sample not kept; a reader that stops early
leaves a prefix that the next read goes on from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from kvideo.data.decode_once import DecodeOnce, batch_bytes

BATCHES = 5
CLIPS = 2  # per batch


class Split:
    """Collated batches of ``BATCHES * CLIPS`` samples, each read counted."""

    def __init__(self) -> None:
        self.opened_at: list[int] = []
        self.decoded = 0

    def open(self, start: int) -> Iterator[dict[str, Any]]:
        self.opened_at.append(start)
        for first in range(start, BATCHES * CLIPS, CLIPS):
            self.decoded += CLIPS
            yield {"frames": torch.full((CLIPS, 4), first, dtype=torch.uint8), "skip_reason": [""] * CLIPS}


def firsts(batches: Any) -> list[int]:
    return [int(batch["frames"][0, 0]) for batch in batches]


def test_a_split_that_fits_is_decoded_once() -> None:
    split = Split()
    cache = DecodeOnce(split.open, cap_bytes=1 << 20)
    assert firsts(cache) == firsts(cache) == [0, 2, 4, 6, 8]
    assert split.decoded == BATCHES * CLIPS and split.opened_at == [0]


def test_a_split_over_the_cap_keeps_its_first_batches_and_decodes_the_rest_each_time() -> None:
    split = Split()
    one = batch_bytes(next(Split().open(0)))
    cache = DecodeOnce(split.open, cap_bytes=2 * one)
    assert firsts(cache) == firsts(cache) == [0, 2, 4, 6, 8]
    assert split.opened_at == [0, 4]  # the second read decodes from the first clip not kept
    assert cache.kept_bytes == 2 * one and not cache.complete
    nothing = Split()
    assert firsts(DecodeOnce(nothing.open, cap_bytes=0)) == [0, 2, 4, 6, 8]  # 0: keeps nothing


def test_a_reader_that_stops_early_leaves_a_prefix_the_next_read_goes_on_from() -> None:
    split = Split()
    cache = DecodeOnce(split.open, cap_bytes=1 << 20)
    for k, _ in enumerate(cache):
        if k == 1:
            break
    assert firsts(cache) == [0, 2, 4, 6, 8]
    assert split.opened_at == [0, 4] and split.decoded == BATCHES * CLIPS
    assert firsts(cache) == [0, 2, 4, 6, 8] and split.opened_at == [0, 4]  # now complete
