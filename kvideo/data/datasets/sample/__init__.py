"""``sample``: the embedded default, a synthetic corpus generated on first use.

Coloured shapes moving in one of four directions, captioned "a {color} {shape} moves
{direction}" (``captions``); written in the WebVid layout by ``corpus`` (also
``python -m kvideo.data.sample --out DIR --n N [--seed S]``) and read back by the ``webvid``
reader. Its attribute questions (``evaluation``) are registered for validation under the same name.

Root: ``video.data_root``, or when empty ``$KVIDEO_CACHE``, or ``~/.cache/kvideo``. The
on-disk corpus name includes size and seed, ``<dataset_name>-n<train>-<val>-s<seed>`` (e.g.
``sample-n800-160-s0``), so changing ``data.sample_*`` generates a new corpus instead of
reusing a stale one. Generation is atomic and locked (safe when several ranks start at once).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kvideo.data.datasets.common import absolute_root, check_split
from kvideo.data.datasets.sample.evaluation import SampleAttributeScorer
from kvideo.data.datasets.webvid import read_webvid
from kvideo.data.rows import ClipRow
from kvideo.data.scoring import ATTRIBUTE_SCORERS
from kvideo.registry import DATASETS
from kvideo.resources import usable_cores

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

DEFAULT_CACHE = "~/.cache/kvideo"


def sample_root(data_root: str) -> str:
    """Where the sample corpus lives: ``data_root``, else ``$KVIDEO_CACHE``, else ``~/.cache/kvideo``."""
    return absolute_root(data_root or os.environ.get("KVIDEO_CACHE") or DEFAULT_CACHE)


def sample_corpus_name(dataset_name: str, n_train: int, n_val: int, seed: int) -> str:
    return f"{dataset_name}-n{n_train}-{n_val}-s{seed}"


@DATASETS.register("sample")
def build_sample(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]:
    """The embedded synthetic corpus, generated on first use (see the package docstring)."""
    check_split(split)
    from kvideo.data.datasets.sample import corpus  # lazy: generating pulls in numpy and av

    root = sample_root(video.data_root)
    name = sample_corpus_name(
        video.dataset_name, data.sample_train_clips, data.sample_val_clips, data.sample_seed
    )
    # Returns at once when the corpus is complete; otherwise generates it (locked, atomic).
    corpus.generate(
        root,
        name=name,
        n_train=data.sample_train_clips,
        n_val=data.sample_val_clips,
        seed=data.sample_seed,
        workers=max(1, min(4, usable_cores())),
    )
    return read_webvid(root, name, split, max_samples)


ATTRIBUTE_SCORERS.register("sample")(SampleAttributeScorer())
