"""Weighted mixtures of datasets (``data.mixture``): their rows, and the order they are read in.

A mixture is built from the registered dataset builders, one per source, each given the run's
``VideoConfig`` with the source's ``dataset_type`` and ``data_root``: any dataset type (plugins
included) is a source, and each keeps its own rules. The sources' rows are concatenated; the
``MixtureLayout`` says where each source's rows lie and how often it is drawn.

The order of one training epoch depends only on (seed, epoch), like every kvideo order, so a
resumed run reads exactly the samples an uninterrupted one would (``kvideo.data.sharding``):

* an epoch holds as many samples as the training sources together (``num_samples``);
* each position draws its source with probability ``weight / sum(weights)``;
* a source's draws take its samples in its own shuffled order: a permutation of its rows, or for
  tar shards the shard stream with its shuffle buffer (``keyed_stream_order``), so a rank still
  reads neighbouring samples of a shard. A source drawn more often than it has rows starts another
  pass in a new order; one drawn less often leaves its order's tail to the next epoch's draw.

Unshuffled (validation) the sources are interleaved evenly, each in file order, so that a capped
validation (``trainer.val_max_batches``) still sees every source.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kvideo.data.clip_dataset import shard_layout
from kvideo.data.rows import ClipRow, ListedRows
from kvideo.data.sharding import ShardLayout, keyed_stream_order
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from kvideo.config import DataConfig, VideoConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MixtureLayout:
    """Where each source's rows lie in a mixture dataset, in ``data.mixture``'s order.

    names / weights: the sources' (those that take part in this split).
    sizes: ``sizes[k]`` rows of source ``k``, which follow source ``k - 1``'s.
    shards: each source's ``ShardLayout`` (its rows lie in tar shards) or ``None``.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]
    sizes: tuple[int, ...]
    shards: tuple[ShardLayout | None, ...]

    @property
    def num_samples(self) -> int:
        return sum(self.sizes)

    @property
    def starts(self) -> np.ndarray:
        """The index of each source's first row."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @functools.cached_property
    def ends(self) -> np.ndarray:
        """The index after each source's last row (kept: ``source_of`` runs for every item)."""
        return np.cumsum(self.sizes)

    def source_of(self, index: int) -> int:
        """The source holding row ``index``."""
        return int(np.searchsorted(self.ends, index, side="right"))

    def order(self, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """One epoch's visiting order (the module docstring gives the rules)."""
        return interleaved(self.sizes) if not shuffle else drawn_order(self, seed, epoch)

    def passes(self, k: int, count: int, *, seed: int, epoch: int) -> np.ndarray:
        """The first ``count`` samples of source ``k``'s stream: its shuffled order, pass after pass."""
        size, taken = self.sizes[k], 0
        passes: list[np.ndarray] = []
        while taken < count:
            key = (seed, epoch, k, len(passes))
            shards = self.shards[k]
            if shards is None:
                one = np.random.default_rng(list(key)).permutation(size)
            else:
                one = keyed_stream_order(shards, key)
            passes.append(one[: count - taken])
            taken += len(passes[-1])
        return np.concatenate(passes) if passes else np.zeros(0, dtype=np.int64)


# Memoized: every rank's order is built where token-budget batches are planned, and a worker
# restart rebuilds its sampler.
@functools.lru_cache(maxsize=4)
def drawn_order(layout: MixtureLayout, seed: int, epoch: int) -> np.ndarray:
    """A training epoch's order: each position's source drawn by weight, then the source's next
    sample in its own stream (``MixtureLayout.passes``)."""
    rng = np.random.default_rng([seed, epoch])
    weights = np.asarray(layout.weights, dtype=np.float64)
    drawn = rng.choice(len(layout.sizes), size=layout.num_samples, p=weights / weights.sum())
    order = np.empty(layout.num_samples, dtype=np.int64)
    for k, start in enumerate(layout.starts.tolist()):
        at = np.flatnonzero(drawn == k)
        order[at] = start + layout.passes(k, len(at), seed=seed, epoch=epoch)
    order.flags.writeable = False  # shared by every caller of the cache
    return order


def interleaved(sizes: tuple[int, ...]) -> np.ndarray:
    """Every row once, the sources spread evenly through the order, each in its file order: row
    ``j`` of a source of ``n`` rows sits at the fraction ``(j + 0.5) / n`` of the order."""
    fractions = np.concatenate([(np.arange(n) + 0.5) / n for n in sizes]) if sizes else np.zeros(0)
    return np.argsort(fractions, kind="stable")


def mixture_rows(
    video: VideoConfig, data: DataConfig, *, split: str, max_samples: int
) -> tuple[ListedRows, MixtureLayout]:
    """The rows of every source that takes part in ``split`` (weight > 0 for training, all for
    validation), concatenated, and their layout. ``max_samples`` caps each source.

    Training needs rows from every source it draws from, and an error names the source.
    Validation scores the sources that have a validation split and says which have none.
    """
    rows: list[ClipRow] = []
    left_out: dict[str, int] = {}
    names, weights, sizes, shards = [], [], [], []
    for source in data.mixture:
        if split == "train" and source.weight == 0:
            continue
        where = f"data.mixture source {source.name!r} ({source.dataset_type}, data_root={source.data_root!r})"
        config = dataclasses.replace(video, dataset_type=source.dataset_type, data_root=source.data_root)
        try:
            listed = DATASETS.get(source.dataset_type)(config, data, split=split, max_samples=max_samples)
        except (ValueError, FileNotFoundError) as e:
            if split == "train":
                raise type(e)(f"{where}: {e}") from None
            logger.warning("no validation for %s: %s", where, e)
            continue
        if not listed:
            if split == "train":
                raise ValueError(f"{where} produced no {split} rows")
            logger.warning("no validation for %s: it has no validation rows", where)
            continue
        for reason, count in getattr(listed, "left_out", {}).items():
            left_out[reason] = left_out.get(reason, 0) + count
        rows += listed
        names.append(source.name)
        weights.append(source.weight)
        sizes.append(len(listed))
        shards.append(shard_layout(listed, data.shuffle_buffer))
    layout = MixtureLayout(tuple(names), tuple(weights), tuple(sizes), tuple(shards))
    return ListedRows(rows, left_out), layout


def dataset_types(video: VideoConfig, data: DataConfig) -> list[str]:
    """The dataset types a run reads: its mixture's sources', or ``video.dataset_type``."""
    return list(dict.fromkeys(source.dataset_type for source in data.mixture)) or [video.dataset_type]
