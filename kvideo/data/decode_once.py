"""``DecodeOnce``: a split read the same way every time (validation) is decoded at its first read
and replayed from host memory after that, within ``data.val_cache_mb``.

Every validation of a run reads the same clips with the same timestamps (the validation loader
always reads epoch 0 in order, and sampling is a function of (seed, epoch, clip)), so decoding them
again only costs time: a newcomer's 2-step smoke run spent 44 of its 67 s validating, most of it
decoding the same 160 clips twice. What is kept is the collated batch before normalization (uint8
frames, 4x smaller than the float ones the model reads), so a replayed batch goes through the
same ``to_device`` as a decoded one and every metric is bit-identical.

A split larger than the cap keeps its first batches and decodes the rest at every read, from the
first sample not kept (``open_batches(start)``: the loader's resume offset), so the cap bounds
memory without making the cache all or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

Batch = dict[str, Any]


def batch_bytes(batch: Batch) -> int:
    """Host bytes of ``batch``'s tensors (strings and lists are small beside the frames)."""
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))


def on_host(batch: Batch) -> Batch:
    """``batch`` with its tensors in host memory (a GPU decoder's frames come out on the GPU,
    whose memory the cache must not hold)."""
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class DecodeOnce:
    """Iterate the split's collated batches: the kept ones from memory, then the rest from
    ``open_batches(start_sample)``, keeping what fits in ``cap_bytes`` (0 keeps nothing).

    A reader may stop early (``trainer.val_max_batches``, a preemption): what was kept stays a
    prefix of the split, and the next read goes on decoding after it.
    """

    def __init__(self, open_batches: Callable[[int], Iterable[Batch]], cap_bytes: int) -> None:
        self.open_batches = open_batches
        self.cap_bytes = cap_bytes
        self.kept: list[Batch] = []
        self.kept_bytes = 0
        self.kept_samples = 0
        self.complete = False  # every batch of the split is kept
        self.full = False  # a batch did not fit: nothing after it is kept

    def __iter__(self) -> Iterator[Batch]:
        yield from self.kept
        if self.complete:
            return
        for batch in self.open_batches(self.kept_samples):
            if not self.full:
                self._keep(batch)
            yield batch
        self.complete = not self.full

    def _keep(self, batch: Batch) -> None:
        size = batch_bytes(batch)
        if self.kept_bytes + size > self.cap_bytes:
            self.full = True
            return
        self.kept.append(on_host(batch))
        self.kept_bytes += size
        self.kept_samples += len(batch["skip_reason"])
