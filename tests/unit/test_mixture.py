"""``data.mixture``'s order (``kvideo.data.mixture``): drawn by weight, each source read in its own
shuffled order, the same for a given (seed, epoch) whoever asks, split over the ranks and
resumable at any sample; validation interleaves the sources evenly."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from kvideo.data.mixture import MixtureLayout, interleaved
from kvideo.data.sharding import ResumableRankSampler, ShardLayout, keyed_stream_order

SHARDS = ShardLayout((40, 30, 30), buffer=8)
LAYOUT = MixtureLayout(("files", "shards", "small"), (2.0, 1.0, 1.0), (300, 100, 10), (None, SHARDS, None))


def source_counts(order: np.ndarray) -> Counter[int]:
    return Counter(LAYOUT.source_of(int(i)) for i in order)


def test_sources_are_drawn_by_weight_over_an_epoch_of_all_training_rows() -> None:
    order = LAYOUT.order(seed=0, epoch=0, shuffle=True)
    assert len(order) == 410
    counts = source_counts(order)
    for k, share in enumerate((0.5, 0.25, 0.25)):
        assert counts[k] / 410 == pytest.approx(share, abs=0.06), k


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    first = LAYOUT.order(seed=1, epoch=2, shuffle=True)
    again = MixtureLayout(LAYOUT.names, LAYOUT.weights, LAYOUT.sizes, LAYOUT.shards).order(
        seed=1, epoch=2, shuffle=True
    )
    assert np.array_equal(first, again)
    assert not np.array_equal(first, LAYOUT.order(seed=1, epoch=3, shuffle=True))
    assert not np.array_equal(first, LAYOUT.order(seed=2, epoch=2, shuffle=True))


def test_a_source_repeats_only_after_each_of_its_rows_was_drawn_once() -> None:
    """The small source (10 rows) is drawn ~100 times: ten passes, each a permutation of its rows."""
    order = LAYOUT.order(seed=0, epoch=0, shuffle=True)
    small = [int(i) - 400 for i in order if i >= 400]
    assert len(small) > 50
    for start in range(0, len(small) - 10, 10):
        assert sorted(small[start : start + 10]) == list(range(10))
    files = [int(i) for i in order if i < 300]
    assert len(set(files)) == len(files)  # fewer draws than rows: no row twice


def test_a_sharded_source_is_read_in_its_shard_stream_order() -> None:
    """Its draws follow the shard stream with its shuffle buffer, so a rank reads neighbouring
    samples of few shards at a time, as a webdataset run alone does."""
    order = LAYOUT.order(seed=0, epoch=0, shuffle=True)
    drawn = [int(i) - 300 for i in order if 300 <= i < 400]
    stream = keyed_stream_order(SHARDS, (0, 0, 1, 0))
    first_pass = min(len(drawn), len(stream))
    assert first_pass > 50
    assert drawn[:first_pass] == stream[:first_pass].tolist()


def test_ranks_take_disjoint_pieces_and_resume_at_any_sample() -> None:
    parts = [
        ResumableRankSampler(410, rank=r, world_size=2, seed=0, epoch=1, layout=LAYOUT).indices
        for r in range(2)
    ]
    whole = LAYOUT.order(seed=0, epoch=1, shuffle=True).tolist()
    assert parts[0] + parts[1] == whole[:410]
    resumed = ResumableRankSampler(410, rank=1, world_size=2, seed=0, epoch=1, start=37, layout=LAYOUT)
    assert resumed.indices == parts[1][37:]


def test_validation_interleaves_the_sources_each_in_file_order() -> None:
    order = interleaved((4, 2)).tolist()
    assert order == [0, 4, 1, 2, 5, 3]
    sampler = ResumableRankSampler(
        6,
        rank=0,
        world_size=1,
        shuffle=False,
        layout=MixtureLayout(("a", "b"), (1.0, 0.0), (4, 2), (None, None)),
    )
    assert sampler.indices == order


def test_a_changed_mixture_is_another_experiment_and_an_older_run_dir_has_none() -> None:
    """``data.mixture`` is an identity key: a resume with other sources or weights is refused (the
    order it resumes in would be another one); a run dir written before mixtures had no key, and
    reads as no mixture."""
    from kvideo.train.resume import identity_changes

    video = {"dataset_type": "sample", "data_root": "", "dataset_name": "sample"}
    source = {"name": "a", "dataset_type": "sample", "data_root": "/a", "weight": 1.0}
    older = {"video": video, "data": {}}
    plain = {"video": video, "data": {"mixture": []}}
    mixed = {"video": video, "data": {"mixture": [source]}}
    heavier = {"video": video, "data": {"mixture": [{**source, "weight": 2.0}]}}
    assert identity_changes(older, plain) == {}
    assert identity_changes(plain, mixed) == {"data.mixture": [[], [source]]}
    assert identity_changes(mixed, heavier) == {"data.mixture": [[source], [{**source, "weight": 2.0}]]}
