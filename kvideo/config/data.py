"""``DataConfig``: per-sample processing that is not about where videos live or how
frames are sampled (those are ``VideoConfig``'s, kept exactly as the seed defined it)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from kvideo.config.checks import (
    require_at_most,
    require_choice,
    require_finite,
    require_non_negative,
    require_positive,
    require_range,
)

BAD_SAMPLE_POLICIES = ("mask", "replace")
# A source's name becomes a metric key (``val_loss/<name>``, a tracker tag, a CSV column).
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_url(path: str) -> bool:
    """Whether a data root names an object store (``scheme://...``: ``s3://``, ``gs://``,
    ``https://``) rather than a local path (``kvideo.data.remote`` reads those)."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isalnum() and scheme != "file"


@dataclass
class MixtureSource:
    """One source of ``data.mixture``.

    name: what its counts and ``val_loss/<name>`` are reported under (letters, digits, ``_.-``).
    dataset_type: any registered dataset builder (``video.dataset_type``'s choices, plugins too).
    data_root: its ``video.data_root`` (empty: the builder's default, as for ``sample``).
    weight: its share of the training samples (relative to the others'); 0 = validation only.
    """

    name: str = ""
    dataset_type: str = ""
    data_root: str = ""
    weight: float = 1.0

    def __post_init__(self) -> None:
        from kvideo.registry import DATASETS

        where = f"data.mixture source {self.name!r}"
        if not SOURCE_NAME.fullmatch(self.name):
            raise ValueError(
                f"data.mixture: each source needs a name of letters, digits and _.- (got {self.name!r})"
            )
        datasets = DATASETS.names()
        if self.dataset_type not in datasets:
            raise ValueError(f"{where}: dataset_type must be one of {datasets} (got {self.dataset_type!r})")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"{where}: weight must be a finite number >= 0 (got {self.weight})")


@dataclass
class DataConfig:
    """Tokenizer, bad-sample handling, the shard shuffle buffer and the embedded sample corpus.

    tokenizer: Path to a local ``tokenizer.json`` (HF ``tokenizers``); empty = byte-level.
    bad_sample_policy: ``mask`` keeps the slot with no loss and an all-false frame mask;
        ``replace`` substitutes the next readable clip so batches stay full.
    blocklist: Optional file of paths to skip (``kvideo.validate`` writes it; format in
        ``kvideo.data.blocklist``).
    max_skip_fraction: The run stops (status ``failed``) when more than this share of the
        samples of a window (at least 64 samples, all ranks) were skipped: a dataset that is
        broken through and through must not "train" on empty batches. 1 disables the check.
    shuffle_buffer: Samples in the shuffle buffer that mixes a stream of tar shards
        (``video/dataset=webdataset``; the rule is in ``kvideo.data.sharding``). It holds sample
        references, not decoded clips, so its size costs no memory, only read locality: a rank
        reads within about this many samples of the stream. 1 keeps each shard's file order
        and only shuffles the order of the shards.
    sample_train_clips / sample_val_clips / sample_seed: size and seed of the synthetic
        corpus generated on first use of ``video/dataset=sample``.
    val_cache_mb: host memory (MiB, per process) that keeps the validation clips after their first
        decode, so that later validations only run the model (``kvideo.data.decode_once``); a
        split larger than this keeps its first batches and decodes the rest each time. 0 decodes
        at every validation. The clips are kept as uint8 frames: 160 clips of 8 frames at 64 px
        take 15 MiB, 1,000 clips of 16 frames at 448 px 9 GiB.
    packing: pack each batch's samples into rows with no padding (``kvideo.model.packing``):
        each sample attends only to itself, at the positions it has padded, so losses and
        gradients are the padded batch's; the model computes only real tokens (plus the end of
        the last rows), which ``token_efficiency`` in ``metrics.jsonl`` shows. Every model
        family; Qwen2-VL and its successors keep their multimodal rope positions.
    max_tokens_per_row: with ``packing``, the longest row in tokens (0 = as long as one padded
        sample of the batch, so a row never costs more attention memory than a padded one).
        Longer rows leave less row-end padding and cost more attention per row; a sample longer
        than this gets a row of its own.
    batch_tokens: training batches of up to this many tokens instead of ``trainer.batch_size``
        clips (0 = off), grouped by length (``kvideo.data.token_batches``), so every step costs
        about the same: with ``packing`` a clip costs its text plus the most visual tokens its
        frames can give; without, the padded length. Every rank takes the same number of steps
        per epoch; the compose-time memory check sizes a batch by this budget. Validation keeps
        ``trainer.batch_size``.
    mixture: weighted sources (``MixtureSource``: name, dataset_type, data_root, weight) that take
        the place of ``video.dataset_type`` / ``video.data_root`` when not empty
        (``kvideo.data.mixture``). Each training sample is drawn from a source with probability
        weight / sum of weights, in a seeded order that resumes exactly; an epoch is as many
        samples as the sources of weight > 0 hold together (a small, heavy source repeats, a
        large, light one is subsampled). Every source's validation split is scored on its own
        (``val_loss/<name>``); a source of weight 0 is validation only. ``metrics.jsonl`` and
        ``final.json`` count each source's ``seen`` and ``skipped`` samples and its ``loss``.
    listing_cache: keep each tar shard's listing (its headers and captions) in
        ``$KVIDEO_CACHE/listings`` under its size and mtime or ETag, so a second run and the other
        ranks read it instead of every header (``kvideo.data.datasets.listing_cache``).
    remote_retry_s: how long a read of a shard in object storage (``s3://``, ``gs://``,
        ``https://``) is retried, with doubling pauses, before its sample is counted as
        ``unreadable`` (``kvideo.data.remote``); below ``decoder.timeout_s``, which it counts in.
    max_visuals: the most videos and pictures one conversation record may hold, each bound to its
        own placeholder (``kvideo.data.datasets.conversations``). A dataset's samples carry frame
        slots for as many clips as its largest record holds; the compose-time token budget
        counts this many, and a record with more is refused naming it.
    """

    tokenizer: str = ""
    bad_sample_policy: str = "mask"
    blocklist: str = ""
    max_skip_fraction: float = 0.5
    shuffle_buffer: int = 1000
    sample_train_clips: int = 800
    sample_val_clips: int = 160
    sample_seed: int = 0
    val_cache_mb: int = 1024
    packing: bool = False
    max_tokens_per_row: int = 0
    batch_tokens: int = 0
    mixture: list[MixtureSource] = field(default_factory=list)
    listing_cache: bool = True
    remote_retry_s: float = 20.0
    max_visuals: int = 1

    @property
    def packed_row_tokens(self) -> int | None:
        """What the model is built with (``ModelSizes.max_tokens_per_row``): ``max_tokens_per_row``
        with ``packing``, None (padded rows) without."""
        return self.max_tokens_per_row if self.packing else None

    def __post_init__(self) -> None:
        require_choice("data.bad_sample_policy", self.bad_sample_policy, BAD_SAMPLE_POLICIES)
        require_finite("data.max_skip_fraction", self.max_skip_fraction)
        require_range("data.max_skip_fraction", self.max_skip_fraction, 0.0, 1.0)
        require_positive("data.shuffle_buffer", self.shuffle_buffer)
        require_positive("data.sample_train_clips", self.sample_train_clips)
        require_positive("data.sample_val_clips", self.sample_val_clips)
        require_non_negative("data.sample_seed", self.sample_seed)
        require_non_negative("data.max_tokens_per_row", self.max_tokens_per_row)
        require_non_negative("data.val_cache_mb", self.val_cache_mb)
        require_non_negative("data.batch_tokens", self.batch_tokens)
        require_non_negative("data.remote_retry_s", self.remote_retry_s)
        require_positive("data.max_visuals", self.max_visuals)
        require_at_most("data.max_visuals", self.max_visuals, 64, "each one is a clip's frames per sample")
        names = [source.name for source in self.mixture]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"data.mixture names source(s) {twice} twice: each needs its own name")
        if self.mixture and not any(source.weight > 0 for source in self.mixture):
            raise ValueError("data.mixture: every weight is 0; at least one source must have weight > 0")
