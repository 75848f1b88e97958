"""The embedded sample corpus: real H.264, deterministic, WebVid layout, captions that parse."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from kvideo.config.data import DataConfig
from kvideo.config.video import VideoConfig
from kvideo.data.datasets.sample import build_sample, sample_root
from kvideo.data.datasets.sample import corpus as sample_corpus
from kvideo.data.datasets.sample.captions import ATTRIBUTES, all_captions, caption_for, parse_caption
from kvideo.data.datasets.sample.evaluation import candidate_set
from kvideo.data.datasets.webvid import read_webvid


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_corpus.generate(tmp_path_factory.mktemp("sample"), n_train=6, n_val=2, seed=3)


def _files(corpus: Path) -> dict[str, bytes]:
    return {str(p.relative_to(corpus)): p.read_bytes() for p in sorted(corpus.rglob("*")) if p.is_file()}


def test_layout_csv_and_marker(corpus: Path) -> None:
    assert corpus.name == "sample" and corpus.parent.name == "raw"
    with open(corpus / "data" / "train" / "partitions" / "0000.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["videoid", "contentUrl", "duration", "page_dir", "name"]
    assert len(rows) == 6
    for row in rows:
        vid = row["videoid"]
        assert (corpus / "data" / "train" / "videos" / vid[:2] / vid[:4] / vid[:6] / f"{vid}.mp4").is_file()
        assert parse_caption(row["name"]) is not None
    val = sorted((corpus / "data" / "val" / "videos").iterdir())
    assert len(val) == 2 and all(p.suffix == ".mp4" for p in val)
    marker = sample_corpus.read_marker(corpus)
    assert marker is not None and marker["n_train"] == 6
    assert sample_corpus.is_complete(corpus, name="sample", n_train=6, n_val=2, seed=3)
    assert not sample_corpus.is_complete(corpus, name="sample", n_train=6, n_val=2, seed=4)


def test_videos_are_h264_with_intended_size_and_duration(corpus: Path) -> None:
    spec = sample_corpus.clip_spec(3, 0, 0)
    vid = spec.videoid
    path = corpus / "data" / "train" / "videos" / vid[:2] / vid[:4] / vid[:6] / f"{vid}.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (spec.size, spec.size)
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == spec.fps
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert container.duration / 1e6 == pytest.approx(spec.duration, abs=1e-3)
    assert len(frames) == spec.num_frames
    assert 2.0 <= spec.duration <= 4.0 + 1 / spec.fps and 8 <= spec.fps <= 12
    # The shape's colour survives compression: some pixels are close to it.
    target = np.array(sample_corpus.COLORS_RGB[spec.color])
    assert (np.abs(frames[0].astype(int) - target).sum(-1) < 60).sum() > 20


def test_same_seed_gives_identical_bytes(corpus: Path, tmp_path: Path) -> None:
    again = sample_corpus.generate(tmp_path, n_train=6, n_val=2, seed=3)
    assert _files(again) == _files(corpus)


def test_clip_does_not_depend_on_corpus_size() -> None:
    assert sample_corpus.clip_spec(0, 0, 5) == sample_corpus.clip_spec(0, 0, 5)
    assert sample_corpus.clip_spec(0, 0, 5) != sample_corpus.clip_spec(1, 0, 5)
    assert sample_corpus.clip_spec(0, 0, 5) != sample_corpus.clip_spec(0, 1, 5)


def test_direction_needs_two_frames() -> None:
    """The shape wraps around, so its position in a frame says nothing about direction;
    the displacement between frames does, and always less than half a frame."""
    for i in range(20):
        spec = sample_corpus.clip_spec(0, 0, i)
        frames = sample_corpus.render_frames(spec)
        assert frames.shape == (spec.num_frames, spec.size, spec.size, 3)
        assert spec.travel < spec.size / 2
    # Marginal start position is uniform regardless of direction (no wall to start from).
    xs: dict[str, list[float]] = {d: [] for d in ATTRIBUTES["direction"]}
    for i in range(400):
        spec = sample_corpus.clip_spec(0, 0, i)
        xs[spec.direction].append(spec.start_xy[0] / spec.size)
    for values in xs.values():
        assert 0.35 < float(np.mean(values)) < 0.65


def test_attributes_are_balanced() -> None:
    specs = [sample_corpus.clip_spec(0, 0, i) for i in range(960)]
    for key in ("color", "shape", "direction"):
        counts = Counter(getattr(s, key) for s in specs)
        expected = len(specs) / len(ATTRIBUTES[key])
        assert set(counts) == set(ATTRIBUTES[key])
        assert all(abs(c - expected) < 0.25 * expected for c in counts.values()), counts


def test_captions_round_trip() -> None:
    captions = all_captions()
    assert len(captions) == len(set(captions)) == 4 * 3 * 4
    for caption in captions:
        parsed = parse_caption(caption)
        assert parsed is not None and caption_for(**parsed) == caption
    assert parse_caption("  A Red circle moves LEFT ") == {
        "color": "red",
        "shape": "circle",
        "direction": "left",
    }
    assert parse_caption("a red circle moves sideways") is None
    with pytest.raises(ValueError, match="unknown color 'purple'"):
        caption_for("purple", "circle", "left")


def test_attribute_questions_vary_one_attribute_at_a_time() -> None:
    truth = {"color": "red", "shape": "circle", "direction": "left"}
    cands = candidate_set(caption_for(**truth))
    assert cands is not None and cands.captions[0] == caption_for(**truth)
    assert len(cands.captions) == len(set(cands.captions)) == 1 + 3 + 2 + 3
    for attr, options in ATTRIBUTES.items():
        group = cands.groups[attr]
        assert len(group) == len(options) and group[cands.truth[attr]] == 0
        for option, index in zip(options, group, strict=True):
            assert parse_caption(cands.captions[index]) == {**truth, attr: option}
    assert candidate_set("a dog runs") is None


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "kvideo.data.sample", "--out", str(out), "--n", "4", "--n-val", "1"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "video.dataset_name=sample" in result.stdout
    rows = read_webvid(str(out), "sample", "train")
    assert len(rows) == 4 and all(os.path.isfile(r.path) for r in rows)
    help_text = subprocess.run(
        [sys.executable, "-m", "kvideo.data.sample", "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "--n-val" in help_text


def test_sample_builder_generates_on_first_use(tmp_path: Path) -> None:
    data = DataConfig(sample_train_clips=5, sample_val_clips=2, sample_seed=1)
    video = VideoConfig(data_root=str(tmp_path), dataset_type="sample", dataset_name="sample")
    rows = build_sample(video, data, split="train", max_samples=0)
    corpus = tmp_path / "raw" / "sample-n5-2-s1"
    assert sample_corpus.is_complete(corpus, name="sample-n5-2-s1", n_train=5, n_val=2, seed=1)
    assert len(rows) == 5 and all(os.path.isfile(r.path) for r in rows)
    assert all(parse_caption(r.caption) for r in rows)
    val = build_sample(video, data, split="validation", max_samples=1)
    assert len(val) == 1 and os.path.isfile(val[0].path)
    # Second use reads the cache: nothing is rewritten.
    mtime = (corpus / sample_corpus.MARKER).stat().st_mtime_ns
    build_sample(video, data, split="train", max_samples=2)
    assert (corpus / sample_corpus.MARKER).stat().st_mtime_ns == mtime


def test_incomplete_corpus_is_regenerated(tmp_path: Path) -> None:
    corpus = tmp_path / "raw" / "sample"
    (corpus / "data").mkdir(parents=True)
    (corpus / "data" / "leftover").write_text("half-written")
    (tmp_path / "raw" / ".sample.tmp-999999-deadbeef").mkdir()  # a killed generator's temp dir
    sample_corpus.generate(tmp_path, n_train=2, n_val=1)
    assert not (corpus / "data" / "leftover").exists()
    assert sample_corpus.is_complete(corpus, name="sample", n_train=2, n_val=1, seed=0)
    assert not [p for p in (tmp_path / "raw").iterdir() if ".tmp-" in p.name]


def test_sample_builder_default_root_is_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KVIDEO_CACHE", str(tmp_path / "cache"))
    assert sample_root("") == str(tmp_path / "cache")
    monkeypatch.delenv("KVIDEO_CACHE")
    assert sample_root("") == os.path.expanduser("~/.cache/kvideo")
    assert sample_root(str(tmp_path)) == str(tmp_path)


def test_concurrent_generation_is_safe(tmp_path: Path) -> None:
    """Two processes (e.g. two DDP ranks) starting at once: one generates, both succeed."""
    command = [sys.executable, "-m", "kvideo.data.sample", "--out", str(tmp_path), "--n", "3", "--n-val", "1"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    corpus = tmp_path / "raw" / "sample"
    assert sample_corpus.is_complete(corpus, name="sample", n_train=3, n_val=1, seed=0)
    assert len(list(corpus.rglob("*.mp4"))) == 4
    assert not [p for p in (tmp_path / "raw").iterdir() if ".tmp-" in p.name]


def test_first_use_generation_says_what_it_does_and_how_long_it_took(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It takes ~25 s on first use: a silent start looked like a hang."""
    import logging

    with caplog.at_level(logging.INFO, logger="kvideo.data.datasets.sample.corpus"):
        sample_corpus.generate(tmp_path, n_train=2, n_val=1, seed=3)
        sample_corpus.generate(tmp_path, n_train=2, n_val=1, seed=3)  # complete: nothing said
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert said[0].startswith(
        f"generating the sample corpus once: 3 clips into {tmp_path.resolve()}/raw/sample"
    )
    assert said[1].startswith("generated the sample corpus in ")
