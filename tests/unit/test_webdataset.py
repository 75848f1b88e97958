"""``video/dataset=webdataset``: video2dataset tar shards listed (folder and brace-pattern layouts,
every video container, broken members, truncated and non-tar shards) and streamed (shard order,
shuffle buffer, rank pieces, exact resume whatever the workers)."""

from __future__ import annotations

import itertools
import logging
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import config_from
from kvideo.config.data import DataConfig
from kvideo.config.video import VideoConfig
from kvideo.data.datasets.webdataset import build_webdataset, split_key
from kvideo.data.loader import build_dataset, build_loader
from kvideo.data.settings import ClipSettings
from kvideo.data.sharding import ResumableRankSampler, ShardLayout, stream_order
from kvideo.data.tokenizer import ByteTokenizer
from kvideo.registry import DATASETS
from tests.helpers.shards import clip_bytes, sample, write_corpus, write_shard

CPU = torch.device("cpu")
TRAIN_SIZES = (5, 3, 4)  # unequal shards: 12 samples


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train/`` with three unequal shards (captions "clip 0".."clip 11"), ``val/`` with one."""
    root = tmp_path_factory.mktemp("shards")
    write_corpus(root / "train", TRAIN_SIZES)
    write_corpus(root / "val", [3], first=100, prefix="v")
    return root


def rows_of(data_root: str | Path, split: str = "train", max_samples: int = 0) -> list[Any]:
    video = VideoConfig(data_root=str(data_root), dataset_type="webdataset")
    return build_webdataset(video, DataConfig(), split=split, max_samples=max_samples)


def make_cfg(data_root: str | Path, **overrides: Any) -> Any:
    raw: dict[str, dict[str, Any]] = {
        "video": {
            "dataset_type": "webdataset",
            "data_root": str(data_root),
            "frame_size": 32,
            "max_frames": 4,
            "min_frames": 2,
        },
        "trainer": {"num_workers": 0, "seed": 3},
    }
    for key, value in overrides.items():
        node, field = key.split(".")
        raw.setdefault(node, {})[field] = value
    return config_from(raw)


def batches(
    cfg: Any, *, epoch: int = 0, skip: int = 0, workers: int = 0, rank: int = 0, world_size: int = 1
) -> list[dict[str, Any]]:
    """The batches of 2 of one epoch: ``index`` and ``skip_reason`` as lists, frames and masks."""
    cfg.trainer.num_workers = workers
    dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    loader = build_loader(
        dataset,
        rank=rank,
        world_size=world_size,
        epoch=epoch,
        start_sample=skip,
        shuffle=True,
        batch_size=2,
        drop_last=True,
        device=CPU,
    )
    return [
        {
            "index": b["index"].tolist(),
            "skip_reason": list(b["skip_reason"]),
            "frames": b["frames"].clone(),
            "frame_mask": b["frame_mask"].clone(),
        }
        for b in loader
    ]


def reasons_by_index(cfg: Any) -> dict[int, str]:
    """Each sample's skip reason ("" when it decoded) over one epoch, checking the frame masks
    agree: frames for a decoded clip, none for a skipped one."""
    reasons = {}
    for batch in batches(cfg):
        for index, reason, mask in zip(
            batch["index"], batch["skip_reason"], batch["frame_mask"], strict=True
        ):
            reasons[index] = reason
            assert bool(mask.any()) == (reason == ""), (index, reason)
    return reasons


# ----------------------------------------------------------------------------- listing


def test_webdataset_is_a_registered_dataset() -> None:
    assert DATASETS.get("webdataset") is build_webdataset


def test_a_folder_with_train_and_val_shards_lists_each_split_in_file_order(root: Path) -> None:
    train = rows_of(root)
    assert [r.caption for r in train] == [f"clip {n}" for n in range(12)]
    first = train[0]
    shard = str(root / "train" / "00000.tar")
    assert (first.path, first.clip_id, first.shard) == (f"{shard}#000000000.mp4", "000000000", shard)
    with tarfile.open(shard) as tar:
        member = tar.getmember("000000000.mp4")
    assert (first.offset, first.size, first.skip_reason) == (member.offset_data, member.size, "")
    assert [r.caption for r in rows_of(root, "validation")] == ["clip 100", "clip 101", "clip 102"]
    assert [r.caption for r in rows_of(root, max_samples=6)] == [f"clip {n}" for n in range(6)]


def test_a_brace_pattern_lists_the_train_shards_in_its_order(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(rows_of(f"{root}/train/{{00000..00002}}.tar")) == 12
    rows = rows_of(f"{root}/train/{{00002,00000}}.tar")
    assert [r.caption for r in rows] == [f"clip {n}" for n in (8, 9, 10, 11, 0, 1, 2, 3, 4)]
    with caplog.at_level(logging.WARNING, logger="kvideo"):
        validation = rows_of(f"{root}/train/{{00002,00000}}.tar", "validation")
    assert validation == rows
    assert "validation reads the train shards" in caplog.text


def test_a_folder_of_shards_is_the_train_split(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """video2dataset's own output folder: shards and nothing to choose a split from."""
    train = rows_of(root / "train")
    assert [r.caption for r in train] == [f"clip {n}" for n in range(12)]
    with caplog.at_level(logging.WARNING, logger="kvideo"):
        assert rows_of(root / "train", "validation") == train
    assert "validation reads its train shards" in caplog.text


@pytest.mark.parametrize("ext", ["webm", "mkv", "avi", "mov", "MP4"])
def test_other_video_containers_are_read_from_their_shard(tmp_path: Path, ext: str) -> None:
    video = clip_bytes(1, suffix="." + ext.lower())
    write_shard(tmp_path / "train" / "00000.tar", [sample("clip", video, "a clip", ext=ext)])
    dataset = build_dataset(ClipSettings.of(make_cfg(tmp_path)), split="train", tokenizer=ByteTokenizer())
    assert dataset.rows[0].path.endswith(f"00000.tar#clip.{ext}")
    item = dataset[0]
    assert item["skip_reason"] == "" and item["frame_mask"].sum() == 3  # 1.5 s at 2 fps


def test_member_names_split_into_key_and_extension_as_webdataset_splits_them() -> None:
    assert split_key("000123.mp4") == ("000123", "mp4")
    assert split_key("part/000123.MP4") == ("part/000123", "mp4")
    assert split_key("clip.seg1.mp4") == ("clip", "seg1.mp4")  # the key ends at the first dot
    assert split_key("README") is None


# ----------------------------------------------------------------------------- bad input


def test_a_broken_member_is_counted_under_its_reason_while_the_rest_of_the_shard_trains(
    tmp_path: Path,
) -> None:
    good = clip_bytes(0)
    write_shard(
        tmp_path / "train" / "00000.tar",
        [
            sample("a", good, "good a"),
            sample("b", b"<html>404 Not Found</html>\n" * 8, "a failed download"),
            sample("c", good, None),  # no caption
            sample("d", None, "a caption without its video"),
            sample("e", good, " \n"),  # an empty caption
            sample("f", good, "good f"),
        ],
    )
    rows = rows_of(tmp_path)
    assert [r.skip_reason for r in rows] == ["", "", "no_caption", "missing", "no_caption", ""]
    assert rows[3].path == f"{tmp_path / 'train' / '00000.tar'}#d"
    assert reasons_by_index(make_cfg(tmp_path)) == {
        0: "",
        1: "unreadable",
        2: "no_caption",
        3: "missing",
        4: "no_caption",
        5: "",
    }
    # With the replace policy the slots hold the next good sample of the shard instead.
    cfg = make_cfg(tmp_path, **{"data.bad_sample_policy": "replace"})
    dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    assert [dataset[i]["caption"] for i in range(1, 5)] == ["good f"] * 4


def test_a_caption_only_in_the_json_member_is_read(tmp_path: Path) -> None:
    """video2dataset writes the caption into <key>.json too; a corpus without .txt members
    trained on empty batches until it failed."""
    good = clip_bytes(0)
    json_only = ("a", {"mp4": good, "json": b'{"key": "a", "caption": " a red circle "}'})
    no_caption = ("b", {"mp4": good, "json": b'{"key": "b", "status": "success"}'})
    write_shard(tmp_path / "train" / "00000.tar", [json_only, no_caption, sample("c", good, "from txt")])
    rows = rows_of(tmp_path)
    assert [(r.caption, r.skip_reason) for r in rows] == [
        ("a red circle", ""),
        ("", "no_caption"),
        ("from txt", ""),
    ]


def test_a_member_written_twice_is_skipped_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Which copy is meant is unknown (tar extracts the last, webdataset refuses the shard): the
    sample is counted as duplicate_member, and the rest of the shard trains."""
    good = clip_bytes(0)
    shard = write_shard(
        tmp_path / "train" / "00000.tar",
        [sample("a", good, "a"), sample("a", clip_bytes(1), "a again"), sample("b", good, "b")],
    )
    with caplog.at_level(logging.WARNING):
        rows = rows_of(tmp_path)
    assert [(r.clip_id, r.skip_reason) for r in rows] == [("a", "duplicate_member"), ("b", "")]
    assert f"shard {shard} holds a.mp4 twice: sample a is skipped" in caplog.text
    assert reasons_by_index(make_cfg(tmp_path)) == {0: "duplicate_member", 1: ""}


def test_a_shard_rewritten_after_listing_is_never_read_at_its_old_offsets(tmp_path: Path) -> None:
    """Read at the listed offsets, every sample of a rewritten shard decoded its neighbour's
    video under the old caption; now they are skipped as shard_changed."""
    good = [clip_bytes(i) for i in range(3)]
    shard = write_shard(
        tmp_path / "train" / "00000.tar", [sample(k, good[i], k) for i, k in enumerate("abc")]
    )
    dataset = build_dataset(ClipSettings.of(make_cfg(tmp_path)), split="train", tokenizer=ByteTokenizer())
    assert [dataset[i]["skip_reason"] for i in range(3)] == ["", "", ""]
    write_shard(shard, [sample(k, good[i], k) for i, k in zip([2, 1], "cb", strict=True)])
    assert [dataset[i]["skip_reason"] for i in range(3)] == ["shard_changed"] * 3


def test_a_truncated_tar_keeps_the_samples_before_the_break(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = write_corpus(tmp_path / "whole", [4])[0]
    with tarfile.open(whole) as tar:
        third_video, third_caption = tar.getmember("000000002.mp4"), tar.getmember("000000002.txt")
    data = Path(whole).read_bytes()
    cuts = {
        "in the third video": (third_video.offset_data + 100, ["clip 0", "clip 1"]),
        "in the third caption's header": (third_caption.offset + 100, ["clip 0", "clip 1", ""]),
    }
    for where, (cut, captions) in cuts.items():
        folder = tmp_path / where.replace(" ", "_")
        (folder / "train").mkdir(parents=True)
        (folder / "train" / "00000.tar").write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kvideo"):
            rows = rows_of(folder)
        assert [r.caption for r in rows] == captions, where
        assert "is truncated or damaged at byte" in caplog.text, where
        dataset = build_dataset(ClipSettings.of(make_cfg(folder)), split="train", tokenizer=ByteTokenizer())
        assert [dataset[i]["skip_reason"] for i in range(len(rows))] == ["", "", "no_caption"][: len(rows)]


def test_a_shard_that_is_not_a_tar_is_named_and_a_tar_is_expected(tmp_path: Path) -> None:
    write_corpus(tmp_path / "train", [2])
    bad = tmp_path / "train" / "00001.tar"
    bad.write_bytes(b"PK\x03\x04 this is a zip file, not a tar" * 40)
    with pytest.raises(
        ValueError, match=rf"webdataset shard {bad} is not a tar archive .*expected an uncompressed tar"
    ):
        rows_of(tmp_path)


def test_a_root_without_shards_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"no \*\.tar shards in {tmp_path / 'train'}"):
        rows_of(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    looked = rf"no train shards \(looked for {empty}/train/\*\.tar, {empty}/\*\.tar\)"
    with pytest.raises(FileNotFoundError, match=looked):
        rows_of(empty)
    with pytest.raises(
        FileNotFoundError, match=r"no validation shards \(looked for .*/validation/\*\.tar, .*/val/"
    ):
        rows_of(empty, "validation")


def test_a_pattern_that_names_no_shard_says_so(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"the pattern expands to 3 paths and none is a shard file"):
        rows_of(f"{root}/train/{{00010..00012}}.tar")
    with pytest.raises(FileNotFoundError, match=r"1 of the 4 shards it expands to do not exist .*00003\.tar"):
        rows_of(f"{root}/train/{{00000..00003}}.tar")
    with pytest.raises(ValueError, match=r"unbalanced braces in the shard pattern"):
        rows_of(f"{root}/train/{{00000..00003.tar")
    with pytest.raises(FileNotFoundError, match=r"no such folder or shard file"):
        rows_of(root / "nowhere")


def test_a_pattern_with_a_digit_too_many_is_refused_before_it_fills_memory(root: Path) -> None:
    """``{000000..99999999}`` is 10^8 paths: it used to grow past 14.9 GB of RSS while listing."""
    with pytest.raises(ValueError, match=r"expands to more than 1,000,000 paths \(a digit too many"):
        rows_of(f"{root}/train/{{000000..99999999}}.tar")


def test_a_huge_caption_member_is_read_bounded(tmp_path: Path) -> None:
    """Captions are cut to tokens anyway: a 16 MiB ``.txt`` used to be read and decoded whole."""
    from kvideo.data.datasets.webdataset import MAX_CAPTION_BYTES

    write_shard(tmp_path / "train" / "00000.tar", [sample("a", clip_bytes(0), "huge " * (16 << 18))])
    (row,) = rows_of(tmp_path)
    assert row.caption.startswith("huge huge") and len(row.caption) <= MAX_CAPTION_BYTES


# ----------------------------------------------------------------------------- order


def test_rank_pieces_are_disjoint_equal_and_cover_the_epoch_at_world_size_2() -> None:
    for sizes, drop_last, each in (((5, 3, 4), True, 6), ((5, 3, 5), True, 6), ((5, 3, 5), False, 7)):
        layout = ShardLayout(sizes, buffer=4)
        pieces = [
            ResumableRankSampler(
                sum(sizes), rank=r, world_size=2, seed=1, epoch=2, drop_last=drop_last, layout=layout
            ).indices
            for r in (0, 1)
        ]
        assert [len(p) for p in pieces] == [each, each], sizes
        if drop_last:
            assert not set(pieces[0]) & set(pieces[1])
            assert len(set(pieces[0]) | set(pieces[1])) == 2 * each
        else:
            assert set(pieces[0]) | set(pieces[1]) == set(range(sum(sizes)))
        # Contiguous pieces of the epoch's order, not every other sample of it.
        order = stream_order(layout, seed=1, epoch=2, shuffle=True).tolist()
        assert pieces[0] == order[:each]


def test_the_ranks_of_a_real_loader_read_disjoint_equal_pieces(root: Path) -> None:
    cfg = make_cfg(root)
    seen = [[i for b in batches(cfg, rank=r, world_size=2) for i in b["index"]] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6
    assert sorted(seen[0] + seen[1]) == list(range(12))


def test_the_shuffle_is_a_function_of_seed_and_epoch_and_changes_across_epochs() -> None:
    layout = ShardLayout((50, 30, 40, 7), buffer=16)
    first = stream_order(layout, seed=0, epoch=0, shuffle=True).tolist()
    assert sorted(first) == list(range(127))
    assert (
        stream_order(ShardLayout((50, 30, 40, 7), buffer=16), seed=0, epoch=0, shuffle=True).tolist() == first
    )
    assert stream_order(layout, seed=0, epoch=1, shuffle=True).tolist() != first
    assert stream_order(layout, seed=1, epoch=0, shuffle=True).tolist() != first
    assert stream_order(layout, seed=0, epoch=0, shuffle=False).tolist() == list(range(127))


def test_the_shuffle_buffer_keeps_reads_within_a_buffer_of_the_shard_stream() -> None:
    sizes, buffer = (50, 30, 40, 7), 16
    starts = [0, 50, 80, 120]
    shard_of = {i: k for k, (s, n) in enumerate(zip(starts, sizes, strict=True)) for i in range(s, s + n)}
    for epoch in range(5):
        # A buffer of one passes the stream through: the shards whole, each in file order, in
        # the epoch's shard permutation (which does not depend on the buffer's size).
        stream = stream_order(ShardLayout(sizes, 1), seed=3, epoch=epoch, shuffle=True).tolist()
        pairs = list(itertools.pairwise(stream))
        assert sum(1 for a, b in pairs if shard_of[a] != shard_of[b]) == len(sizes) - 1
        assert all(b == a + 1 for a, b in pairs if shard_of[a] == shard_of[b])
        # Through a buffer of 16, the sample emitted at step j entered by stream position j + 15.
        order = stream_order(ShardLayout(sizes, buffer), seed=3, epoch=epoch, shuffle=True).tolist()
        position = {i: p for p, i in enumerate(stream)}
        assert sorted(order) == sorted(stream) and order != stream
        assert all(position[i] <= step + buffer - 1 for step, i in enumerate(order))


@pytest.mark.parametrize("policy", ["uniform", "random_segment"])
def test_resume_yields_exactly_the_uninterrupted_batches_whatever_the_workers(
    root: Path, policy: str
) -> None:
    cfg = make_cfg(root, **{"video.sampling_policy": policy})
    full = batches(cfg, epoch=1, workers=0)
    resumed = batches(cfg, epoch=1, skip=4, workers=2)  # 2 batches of 2 consumed
    assert len(full) == 6 and len(resumed) == 4
    for a, b in zip(full[2:], resumed, strict=True):
        assert a["index"] == b["index"]
        assert torch.equal(a["frame_mask"], b["frame_mask"])
        assert torch.equal(a["frames"], b["frames"])
