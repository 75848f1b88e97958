"""``DataConfig``: per-sample processing that is not about where videos live or how
frames are sampled (those are ``VideoConfig``'s, kept exactly as the seed defined it)."""

from __future__ import annotations

from dataclasses import dataclass

from kvideo.config.checks import (
    require_choice,
    require_finite,
    require_non_negative,
    require_positive,
    require_range,
)

BAD_SAMPLE_POLICIES = ("mask", "replace")


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
    val_max_samples: Cap on validation clips (0 = all).
    shuffle_buffer: Samples in the shuffle buffer that mixes a stream of tar shards
        (``video/dataset=webdataset``; the rule is in ``kvideo.data.sharding``). It holds sample
        references, not decoded clips, so its size costs no memory, only read locality: a rank
        reads within about this many samples of the stream. 1 keeps each shard's file order
        and only shuffles the order of the shards.
    sample_train_clips / sample_val_clips / sample_seed: size and seed of the synthetic
        corpus generated on first use of ``video/dataset=sample``.
    """

    tokenizer: str = ""
    bad_sample_policy: str = "mask"
    blocklist: str = ""
    max_skip_fraction: float = 0.5
    val_max_samples: int = 0
    shuffle_buffer: int = 1000
    sample_train_clips: int = 800
    sample_val_clips: int = 160
    sample_seed: int = 0

    def __post_init__(self) -> None:
        require_choice("data.bad_sample_policy", self.bad_sample_policy, BAD_SAMPLE_POLICIES)
        require_finite("data.max_skip_fraction", self.max_skip_fraction)
        require_range("data.max_skip_fraction", self.max_skip_fraction, 0.0, 1.0)
        require_non_negative("data.val_max_samples", self.val_max_samples)
        require_positive("data.shuffle_buffer", self.shuffle_buffer)
        require_positive("data.sample_train_clips", self.sample_train_clips)
        require_positive("data.sample_val_clips", self.sample_val_clips)
        require_non_negative("data.sample_seed", self.sample_seed)
