"""Per-sample assembly, bad-sample policies, sharding and exact resume of the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import KVideoConfig, config_from
from kvideo.data import loader
from kvideo.data.loader import build_dataset, build_loader
from kvideo.data.settings import ClipSettings
from kvideo.data.sharding import ResumableRankSampler
from kvideo.data.tokenizer import ByteTokenizer
from tests.helpers.videos import make_h264

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("clips")
    # 1.0-3.0 s at 10 fps: 2-6 stamps at 2 fps, so some samples need padding.
    return [
        Path(make_h264(root / f"c{i}.mp4", seconds=1.0 + (i % 5) * 0.5, fps=10, width=48, height=32, gop=12))
        for i in range(10)
    ]


def make_cfg(tmp_path: Path, paths: list[str], **overrides) -> KVideoConfig:
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": p, "caption": f"clip number {i}"}) + "\n" for i, p in enumerate(paths))
    )
    raw: dict[str, Any] = {
        "video": {
            "dataset_type": "manifest",
            "data_root": str(manifest),
            "frame_size": 32,
            "max_frames": 6,
            "min_frames": 2,
            "prompt": "describe:",
        },
        "trainer": {"num_workers": 0, "seed": 3},
    }
    for key, value in overrides.items():
        node, field = key.split(".")
        raw.setdefault(node, {})[field] = value
    return config_from(raw)


def epoch_batches(cfg, *, epoch: int = 0, skip: int = 0, batch_size: int = 2):
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    return build_loader(
        ds,
        epoch=epoch,
        start_sample=skip,
        shuffle=True,
        batch_size=batch_size,
        drop_last=True,
        device=CPU,
    )


def indices_and_frames(cfg, *, epoch: int = 0, skip: int = 0, workers: int = 0, batch_size: int = 2):
    cfg.trainer.num_workers = workers
    return [
        (batch["index"].tolist(), batch["frames"].clone(), batch["frame_mask"].clone())
        for batch in epoch_batches(cfg, epoch=epoch, skip=skip, batch_size=batch_size)
    ]


@pytest.fixture
def prefetch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load as the GPU decoders do (in the training process, on the prefetch thread), with
    the CPU decoder the config names: the same machinery, testable without a GPU."""
    monkeypatch.setattr(loader, "prefetches_in_process", lambda cfg: True)


def test_sample_padding_mask_and_labels(tmp_path: Path, clips: list[Path]) -> None:
    cfg = make_cfg(tmp_path, [str(clips[0])])  # 1.0 s -> round(2) = 2 stamps, clamped to min 2
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    item = ds[0]
    assert item["skip_reason"] == ""
    assert item["frames"].shape == (6, 32, 32, 3) and item["frames"].dtype == torch.uint8
    assert item["frame_mask"].tolist() == [True, True, False, False, False, False]
    assert item["frames"][2:].abs().sum() == 0
    assert item["frame_times"][2:].tolist() == [-1.0] * 4
    assert item["frame_times"][0] == 0.0 and 0.8 <= item["frame_times"][1] <= 0.9
    # the prompt "describe:" is masked from the loss; the caption and EOS are not
    labels, ids = item["labels"], item["input_ids"]
    target = [int(i) for i, lab in zip(ids, labels, strict=True) if lab != -100]
    assert bytes(target[:-1]).decode() == "clip number 0"


def test_bad_sample_is_masked_and_counted(tmp_path: Path, clips: list[Path]) -> None:
    cfg = make_cfg(tmp_path, [str(clips[0]), str(tmp_path / "gone.mp4")])
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    bad = ds[1]
    assert bad["skip_reason"] == "missing"
    assert not bad["frame_mask"].any()
    assert (bad["labels"] == -100).all()


def test_bad_sample_is_replaced_deterministically(tmp_path: Path, clips: list[Path]) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cfg = make_cfg(
        tmp_path,
        [str(empty), str(tmp_path / "gone.mp4"), str(clips[2])],
        **{"data.bad_sample_policy": "replace"},
    )
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    item = ds[0]
    assert item["skip_reason"] == "empty"  # the bad file is still reported...
    assert item["frame_mask"].any()  # ...but the slot holds the next decodable clip
    assert item["caption"] == "clip number 2"
    assert (item["labels"] != -100).any()


def test_blocklisted_paths_are_not_decoded(tmp_path: Path, clips: list[Path]) -> None:
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text(f"# from kvideo.validate\n{clips[1]}\n")
    cfg = make_cfg(tmp_path, [str(clips[0]), str(clips[1])], **{"data.blocklist": str(blocklist)})
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    assert ds[0]["skip_reason"] == ""
    assert ds[1]["skip_reason"] == "blocklisted"


def test_missing_blocklist_file_names_the_field(tmp_path: Path, clips: list[Path]) -> None:
    cfg = make_cfg(tmp_path, [str(clips[0])], **{"data.blocklist": str(tmp_path / "nope.txt")})
    with pytest.raises(FileNotFoundError, match=r"data\.blocklist"):
        build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())


def test_shards_are_disjoint_and_cover_the_epoch() -> None:
    shards = [
        ResumableRankSampler(11, rank=r, world_size=3, seed=1, epoch=4, drop_last=True).indices
        for r in range(3)
    ]
    assert all(len(s) == 3 for s in shards)
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == 9
    padded = [
        ResumableRankSampler(11, rank=r, world_size=3, seed=1, epoch=4, drop_last=False).indices
        for r in range(3)
    ]
    assert {i for s in padded for i in s} == set(range(11))
    again = ResumableRankSampler(11, rank=1, world_size=3, seed=1, epoch=4, drop_last=True).indices
    assert again == shards[1]
    other_epoch = ResumableRankSampler(11, rank=1, world_size=3, seed=1, epoch=5, drop_last=True).indices
    assert other_epoch != shards[1]


@pytest.mark.parametrize("policy", ["uniform", "random_segment"])
def test_resume_yields_exactly_the_uninterrupted_batches_whatever_the_workers(
    tmp_path: Path, clips: list[Path], policy: str
) -> None:
    cfg = make_cfg(tmp_path, [str(p) for p in clips], **{"video.sampling_policy": policy})
    full = indices_and_frames(cfg, epoch=1, workers=0)
    resumed = indices_and_frames(cfg, epoch=1, skip=4, workers=2)  # 2 batches of 2 consumed
    assert len(full) == 5 and len(resumed) == 3
    for (idx_a, frames_a, mask_a), (idx_b, frames_b, mask_b) in zip(full[2:], resumed, strict=True):
        assert idx_a == idx_b
        assert torch.equal(mask_a, mask_b)
        assert torch.equal(frames_a, frames_b)


@pytest.mark.parametrize("policy", ["uniform", "random_segment"])
def test_resume_on_the_prefetch_thread_yields_exactly_the_uninterrupted_batches(
    tmp_path: Path, clips: list[Path], policy: str, prefetch_thread: None
) -> None:
    cfg = make_cfg(tmp_path, [str(p) for p in clips], **{"video.sampling_policy": policy})
    full = indices_and_frames(cfg, epoch=1, workers=0)
    resumed = indices_and_frames(cfg, epoch=1, skip=4, workers=2)  # workers are ignored on this path
    assert len(full) == 5 and len(resumed) == 3
    for (idx_a, frames_a, mask_a), (idx_b, frames_b, mask_b) in zip(full[2:], resumed, strict=True):
        assert idx_a == idx_b
        assert torch.equal(mask_a, mask_b)
        assert torch.equal(frames_a, frames_b)


@pytest.mark.parametrize("path", ["in process", "worker processes", "prefetch thread"])
def test_loading_an_epoch_leaves_the_global_rng_alone_on_every_path(
    tmp_path: Path, clips: list[Path], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """No ``rng_neutral`` here: the prefetch thread runs whenever it likes, so the loader must
    not draw from the global RNG at all (a draw there shifts dropout in the training step)."""
    if path == "prefetch thread":
        monkeypatch.setattr(loader, "prefetches_in_process", lambda cfg: True)
    cfg = make_cfg(tmp_path, [str(p) for p in clips[:6]])
    cfg.trainer.num_workers = 2 if path == "worker processes" else 0
    torch.manual_seed(11)
    before = torch.get_rng_state()
    batches = epoch_batches(cfg, epoch=0, batch_size=2)
    assert len(list(batches)) == 3
    assert torch.equal(torch.get_rng_state(), before)


def test_loader_seeds_depend_on_seed_epoch_and_rank_only() -> None:
    from kvideo.data.loader import loader_generator

    def first_draw(seed: int, epoch: int, rank: int) -> int:
        return int(torch.empty((), dtype=torch.int64).random_(generator=loader_generator(seed, epoch, rank)))

    torch.manual_seed(0)
    a = first_draw(3, 1, 0)
    torch.manual_seed(1)  # the global RNG plays no part
    assert first_draw(3, 1, 0) == a
    assert len({a, first_draw(3, 2, 0), first_draw(3, 1, 1), first_draw(4, 1, 0)}) == 4


def test_random_segment_frames_change_with_the_epoch(tmp_path: Path, clips: list[Path]) -> None:
    cfg = make_cfg(tmp_path, [str(clips[4])], **{"video.sampling_policy": "random_segment"})
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    ds.set_epoch(0)
    first = ds[0]["frame_times"]
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["frame_times"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[0]["frame_times"])


def test_loader_output_is_normalized_float_channels_first(tmp_path: Path, clips: list[Path]) -> None:
    cfg = make_cfg(tmp_path, [str(p) for p in clips[:4]])
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    batch = next(
        iter(
            build_loader(
                ds,
                shuffle=False,
                batch_size=4,
                drop_last=True,
                device=CPU,
            )
        )
    )
    assert batch["frames"].shape == (4, 6, 3, 32, 32) and batch["frames"].dtype == torch.float32
    assert batch["frames"].min() < -1.0 and batch["frames"].max() > 1.0  # ImageNet-normalized
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["skip_reason"] == ["", "", "", ""]


def test_prefetch_thread_stops_when_the_consumer_stops_early() -> None:
    """GPU decoding reads ahead on a thread; an early stop (capped validation, preemption)
    must end that thread instead of leaving it blocked while it holds decoded frames."""
    import itertools

    from kvideo.data.loader import _ThreadPrefetcher

    produced: list[int] = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    prefetcher = _ThreadPrefetcher(endless(), depth=2)
    it: Any = iter(prefetcher)  # a generator: close() ends it
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    prefetcher._thread.join(timeout=5)
    assert not prefetcher._thread.is_alive()
    assert len(produced) <= 3 + 2 + 2  # consumed + queue depth + one in hand


def test_prefetch_thread_surfaces_source_errors() -> None:
    from kvideo.data.loader import _ThreadPrefetcher

    def broken():
        yield 1
        raise RuntimeError("decoder exploded")

    it = iter(_ThreadPrefetcher(broken(), depth=1))
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="decoder exploded"):
        next(it)


# --------------------------------------------------------------------------- blocklist files


def test_a_blocklist_that_is_a_directory_says_a_file_was_expected(tmp_path: Path, clips: list[Path]) -> None:
    from kvideo.data.blocklist import read_blocklist

    (tmp_path / "report").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        read_blocklist(str(tmp_path / "report"))
    msg = str(info.value)
    assert msg.startswith(f"data.blocklist={str(tmp_path / 'report')!r} is a directory") and "\n" not in msg
    assert "expected a file" in msg and "blocklist.txt" in msg and "no such file" not in msg
    # The usual slip: the validate --out folder instead of the blocklist in it. Say which file.
    (tmp_path / "report" / "blocklist.txt").write_text("")
    with pytest.raises(IsADirectoryError, match=r"did you mean data\.blocklist=.*report/blocklist\.txt"):
        build_dataset(
            ClipSettings.of(
                make_cfg(tmp_path, [str(clips[0])], **{"data.blocklist": str(tmp_path / "report")})
            ),
            split="train",
            tokenizer=ByteTokenizer(),
        )


def test_json_lines_blocklists_keep_every_name_exactly(tmp_path: Path) -> None:
    """What ``kvideo.validate`` writes: a ``#`` header, then one JSON object (or string) per
    path, so names with trailing spaces, newlines or leading ``#`` come back unchanged."""
    from kvideo.data.blocklist import read_blocklist

    names = ["/v/twin.mp4 ", "/v/line\nbreak.mp4", "/v/#hash.mp4", " /v/lead.mp4", "/v/é\u2028.mp4"]
    file = tmp_path / "blocklist.txt"
    file.write_text(
        "# kvideo.validate blocklist (JSON lines)\n"
        + "".join(json.dumps({"path": p, "reason": "unreadable"}) + "\n" for p in names[:-1])
        + "\n"
        + json.dumps(names[-1])
        + "\r\n",  # a bare JSON string, a blank line, a CRLF
        encoding="utf-8",
    )
    assert read_blocklist(str(file)) == set(names)


def test_old_one_path_per_line_blocklists_still_load(tmp_path: Path) -> None:
    from kvideo.data.blocklist import read_blocklist

    file = tmp_path / "old.txt"
    file.write_text("# kvideo.validate blocklist: train with data.blocklist=x\n/v/a.mp4\r\n\n  /v/b.mp4  \n")
    assert read_blocklist(str(file)) == {"/v/a.mp4", "/v/b.mp4"}  # stripped, as they always were
    assert read_blocklist("") == frozenset()


def test_a_damaged_json_lines_blocklist_names_the_file_and_line(tmp_path: Path) -> None:
    from kvideo.data.blocklist import read_blocklist

    file = tmp_path / "blocklist.txt"
    file.write_text('# header\n{"path": "/v/a.mp4"}\n/v/b.mp4\n')
    with pytest.raises(ValueError, match=r"data\.blocklist=.*blocklist\.txt' line 3: expected a JSON string"):
        read_blocklist(str(file))
    file.write_text('{"path": 3}\n')
    with pytest.raises(ValueError, match=r"line 1: expected a JSON string or .*got '\{\"path\": 3\}'"):
        read_blocklist(str(file))
