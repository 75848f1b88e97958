"""Datasets and loaders for one epoch on one rank, CPU-worker or GPU-decode flavoured.

CPU decoding runs in DataLoader worker processes. GPU decoding (decord on NVDEC) must
not touch CUDA inside forked workers, so it runs in the training process, on a
background thread that keeps ``decoder.prefetch`` batches ready (decord releases the
GIL while it decodes).

Neither path draws from the global torch RNG, so exact resume holds on both: creating a
DataLoader iterator draws its workers' base seed from ``DataLoader(generator=...)``, and
each loader gets its own generator, seeded by (seed, epoch, rank). With the global RNG
that draw would land wherever the iterator is created: in the training process a
``rng_neutral`` block can undo it (``kvideo.train.stream``), but on the prefetch thread it
lands at an arbitrary point of a training step and shifts what dropout draws next.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from torch.utils.data import DataLoader

from kvideo.config import DecoderConfig
from kvideo.data.blocklist import read_blocklist
from kvideo.data.clip_dataset import VideoClipDataset
from kvideo.data.mixture import MixtureLayout, mixture_rows
from kvideo.data.preprocess import MEAN, STD, Statistics, normalize_frames
from kvideo.data.rows import ClipRow
from kvideo.data.sharding import ResumableRankSampler
from kvideo.data.token_batches import TokenBudgetBatches
from kvideo.data.watchdog import InFlight, WorkerSupervisor
from kvideo.decode import build_decoder
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; the annotations are strings

    from kvideo.data.settings import ClipSettings


def build_dataset(
    settings: ClipSettings, *, split: str, tokenizer: Any, local_rank: int = 0
) -> VideoClipDataset:
    """Rows from the configured dataset builder for ``split`` (or from each source of
    ``data.mixture``, ``kvideo.data.mixture``), wrapped for decoding (``settings``:
    ``ClipSettings.of`` the run's config)."""
    video, data = settings.video, settings.data
    blocklist = read_blocklist(data.blocklist)  # first: a typo must not wait for a corpus build
    if prefetches_in_process(settings.decoder):  # a GPU decoder this machine lacks: refused now
        build_decoder(settings.decoder, local_rank=local_rank)
    cap = video.max_samples if split == "train" else video.val_max_samples
    mixture: MixtureLayout | None = None
    rows: list[ClipRow]
    if data.mixture:
        rows, mixture = mixture_rows(video, data, split=split, max_samples=cap)
    else:
        rows = DATASETS.get(video.dataset_type)(video, data, split=split, max_samples=cap)
    left_out: dict[str, int] = dict(getattr(rows, "left_out", {}))  # ListedRows: counted once
    if not rows:
        why = "".join(f"; {n} rows left out at listing: {reason}" for reason, n in left_out.items())
        if data.mixture:
            raise ValueError(f"no source of data.mixture has {split} rows{why}")
        raise ValueError(
            f"video.dataset_type={video.dataset_type} produced no {split} rows "
            f"(video.data_root={video.data_root!r}{why})"
        )
    dataset = VideoClipDataset(
        rows, settings, tokenizer, local_rank=local_rank, blocklist=blocklist, mixture=mixture
    )
    dataset.left_out = left_out
    return dataset


def _padded(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors of one shape as they are; of several (``video.resize=max_pixels`` frames, each
    clip at its own size) zero-padded at the end of each dimension to the largest."""
    if all(v.shape == values[0].shape for v in values):
        return values
    shape = [max(sizes) for sizes in zip(*(v.shape for v in values), strict=True)]
    out = []
    for v in values:
        pad: list[int] = []
        for have, want in zip(reversed(v.shape), reversed(shape), strict=True):
            pad += [0, want - have]
        out.append(torch.nn.functional.pad(v, pad))
    return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (padding ``max_pixels`` frames to the batch's largest, ``_padded``), keep
    strings as lists (default_collate would, too, but slower)."""
    batch: dict[str, Any] = {}
    for key, first in samples[0].items():
        values = [s[key] for s in samples]
        if isinstance(first, torch.Tensor):
            # GPU-decoded clips sit on the GPU, a masked bad slot on the CPU: stack on the GPU.
            device = next((v.device for v in values if v.is_cuda), first.device)
            batch[key] = torch.stack(_padded([v.to(device) for v in values]))
        elif isinstance(first, int):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch


def _worker_init(_: int) -> None:
    # One intra-op thread per worker: the workers already use every core.
    torch.set_num_threads(1)


def loader_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The generator a DataLoader draws its workers' base seed from: a function of
    (seed, epoch, rank) alone, never of the global RNG (see the module docstring)."""
    # SeedSequence mixes the three into one well-spread 64-bit seed (a sum would collide).
    (state,) = np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state))


def prefetches_in_process(decoder: DecoderConfig) -> bool:
    """Decode in the training process on a prefetch thread instead of in DataLoader worker
    processes: what decoders whose frames come out on the GPU need (CUDA must not be
    initialised in forked workers). The one place the loader and the training stream ask."""
    return decoder.decodes_on_gpu


def to_device(
    batch: dict[str, Any], device: torch.device, statistics: Statistics = (MEAN, STD)
) -> dict[str, Any]:
    """Move tensors to the training device and normalize frames there (with the vision part's
    ``statistics``, see ``pixel_statistics``)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
        out[key] = value
    out["frames"] = normalize_frames(out["frames"], statistics=statistics)
    return out


class _ThreadPrefetcher:
    """Iterate ``source`` on a daemon thread, ``depth`` items ahead.

    A consumer that stops early (validation capped at N batches, preemption) closes the
    iterator, which stops the thread instead of leaving it blocked on a full queue while
    holding GPU frames and the decoder.
    """

    _END = object()

    def __init__(self, source: Iterable[Any], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterable[Any]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as e:  # surfaced in the consumer, not lost in a thread
            self._put(e)
        self._put(self._END)

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._queue.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()


class BatchPlan(TypedDict, total=False):
    """Which of the split's batches a loader makes, besides their size and device (the keywords
    ``build_loader`` passes on to ``collated_batches``, whose defaults read the whole split in
    order, in one process): ``shuffle``, ``drop_last``, this process's ``rank`` of
    ``world_size``, the ``epoch``, the ``start_sample`` to begin at (the samples this rank
    consumed before a resume) and ``batch_tokens`` (``data.batch_tokens``)."""

    shuffle: bool
    drop_last: bool
    rank: int
    world_size: int
    epoch: int
    start_sample: int
    batch_tokens: int


def build_loader(
    dataset: VideoClipDataset,
    *,
    batch_size: int,
    device: torch.device,
    **plan: Unpack[BatchPlan],
) -> Iterator[dict[str, Any]]:
    """Batches of one epoch for this rank, as ``plan`` says (``BatchPlan``; by default the whole
    split in order, in one process); ``batch_tokens``: batches of up to that many tokens
    (``kvideo.data.token_batches``) instead of ``batch_size`` clips.

    Frames come out normalized by the vision part's statistics, as float (B, F, 3, S, S) on
    ``device``.
    """
    batches = collated_batches(dataset, batch_size=batch_size, device=device, **plan)
    statistics = dataset.settings.statistics
    return (to_device(batch, device, statistics) for batch in batches)


def collated_batches(
    dataset: VideoClipDataset,
    *,
    batch_size: int,
    device: torch.device,
    shuffle: bool = False,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    start_sample: int = 0,
    batch_tokens: int = 0,
) -> Iterable[dict[str, Any]]:
    """``build_loader``'s batches as the collate makes them, before ``to_device``: uint8 frames
    on the host (on the GPU from a GPU decoder), what ``kvideo.data.decode_once`` keeps."""
    settings = dataset.settings
    in_process = prefetches_in_process(settings.decoder)
    workers = 0 if in_process else settings.num_workers

    def order(of_rank: int, start: int) -> ResumableRankSampler:
        return ResumableRankSampler(
            len(dataset),
            rank=of_rank,
            world_size=world_size,
            seed=settings.seed,
            epoch=epoch,
            shuffle=shuffle,
            start=start,
            drop_last=drop_last,
            layout=dataset.layout,
        )

    def make_loader(delivered: int) -> DataLoader[dict[str, Any]]:
        # Set here, right before the workers fork with their copy of the dataset: the next
        # epoch may have been opened early and set its own epoch on the shared object.
        dataset.set_epoch(epoch)
        # Each loader's workers get their own slots (the next epoch's may run beside these).
        dataset.in_flight = InFlight(workers) if workers else None
        batching: dict[str, Any] = {
            "batch_size": batch_size,
            "sampler": order(rank, start_sample + delivered),
            "drop_last": drop_last,
        }
        if batch_tokens:
            batches = TokenBudgetBatches(
                [order(r, 0).indices for r in range(world_size)],
                rank=rank,
                cost=dataset.token_costs(),
                budget=batch_tokens,
                seed=settings.seed,
                epoch=epoch,
                start=start_sample + delivered,
            )
            batching = {"batch_sampler": batches}
        loader = DataLoader(
            dataset,
            **batching,
            num_workers=workers,
            collate_fn=collate,
            generator=loader_generator(settings.seed, epoch, rank),
            pin_memory=device.type == "cuda" and not in_process,
            worker_init_fn=_worker_init if workers else None,
            prefetch_factor=4 if workers else None,
        )
        loader.in_flight = dataset.in_flight
        return loader

    # Worker processes start (and decode ahead) now, not at the first next(): a trainer that
    # opens the next epoch before this one ends then never waits for worker start-up.
    first = make_loader(0)
    started = (first, iter(first)) if workers else None
    # A decode timeout leaves a stuck thread in its worker, a crash leaves no worker: replace
    # the workers and go on after the delivered samples (watchdog.py).
    batches: Iterable[dict[str, Any]] = WorkerSupervisor(
        make_loader, enabled=workers > 0, started=started, crashed=dataset.crashed
    )
    if in_process:
        batches = _ThreadPrefetcher(batches, settings.decoder.prefetch)
    return batches
