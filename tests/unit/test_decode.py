"""Decoder layer: index mapping (pure), decord_cpu and pyav_cpu against an independent
PyAV decode, edit lists, error reasons, trimming, timeout, GPU-factory error, and the
reader-release guard."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import tempfile
import time
import weakref
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch

from kvideo.config.decoder import DecoderConfig
from kvideo.decode import ClipMeta, DecodedClip, DecodeError, build_decoder
from kvideo.decode.frame_index import Timeline, valid_prefix
from kvideo.decode.nvdec_decoder import NvdecDecoder
from kvideo.decode.nvdec_probe import nvdec_missing
from kvideo.decode.pyav_decoder import PyAVDecoder
from kvideo.decode.types import VideoBytes
from kvideo.registry import DECODERS
from kvideo.resize import Resize
from tests.helpers import hostile as H
from tests.helpers import videos as V
from tests.helpers.nvdec_standin import cpu_nvdec
from tests.helpers.paths import REPO

# --------------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every test video, encoded once per module (~0.5 s in all)."""
    d = tmp_path_factory.mktemp("videos")
    c = {
        "h264_gop250": V.make_h264(d / "h264_gop250.mp4", seconds=2, gop=250),
        "h264_short_gop_b": V.make_h264(d / "h264_short_b.mp4", seconds=2, gop=10, bframes=True),
        "vp9": V.make_vp9_webm(d / "vp9.webm", seconds=2, gop=250),
        "vp8": V.make_vp8_webm(d / "vp8.webm", seconds=2, gop=10),
        "vfr": V.make_vfr(d / "vfr.mp4"),
        "vfr_offset_mkv": V.make_vfr(d / "vfr_offset.mkv", start=0.7),
        "offset_mp4": V.make_offset_start(d / "offset.mp4", start=1.5),
        "offset_webm": V.make_offset_start(d / "offset.webm", start=1.5, codec="libvpx-vp9"),
        "odd_size": V.make_odd_size(d / "odd.mp4"),
        "faststart": V.make_h264(d / "faststart.mp4", seconds=2, gop=10, faststart=True),
        "mpegts_b": V.make_mpegts(d / "b.ts", seconds=2),
        "h264_6s_b": V.make_h264(d / "h264_6s_b.mp4", seconds=6, gop=50, bframes=True),
    }
    c["stream_copy_cut"] = V.make_stream_copy_cut(c["h264_6s_b"], d / "cut.mp4", cut=1.32)
    c["audio_only"] = V.make_audio_only(d / "audio.m4a")
    c["text"] = V.make_text_as_video(d / "not_a_video.mp4")
    c["empty"] = V.write_bytes(d / "empty.mp4", b"")
    c["truncated"] = V.make_truncated(c["h264_gop250"], d / "truncated.mp4")
    c["truncated_faststart"] = V.make_truncated(c["faststart"], d / "truncated_fs.mp4", keep=0.6)
    c["corrupt"] = V.make_corrupt(c["faststart"], d / "corrupt.mp4")
    c["unknown_codec_tag"] = H.make_unknown_codec_tag(c["h264_gop250"], d / "unknown_codec_tag.mp4")
    c["garbage_avcc"] = H.make_garbage_avcc(c["h264_gop250"], d / "garbage_avcc.mp4")
    (d / "a_directory.mp4").mkdir()
    c["directory"] = str(d / "a_directory.mp4")
    c["missing"] = str(d / "missing.mp4")
    return c


CPU_DECODERS = ["decord_cpu", "pyav_cpu"]
# nvdec: PyNvVideoCodec on a machine with NVDEC; elsewhere its machinery with a CPU frame reader
# in NVDEC's place (tests.helpers.nvdec_standin), so its index mapping meets the same contract.
NVDEC = "nvdec" if nvdec_missing() is None and torch.cuda.is_available() else "nvdec_cpu_reader"


@pytest.fixture(scope="module", params=[*CPU_DECODERS, NVDEC])
def dec(request):
    """Each decoder in turn: all must honour the same contract."""
    if request.param == "nvdec_cpu_reader":
        return cpu_nvdec()[0]
    return build_decoder(DecoderConfig(name=request.param, num_threads=1, timeout_s=30.0))


@pytest.fixture(scope="module")
def decord_dec():
    return build_decoder(DecoderConfig(name="decord_cpu", num_threads=1, timeout_s=30.0))


def fixed(stamps):
    """A sampler that ignores the metadata."""
    return lambda meta: list(stamps)


def linspace_sampler(n: int):
    return lambda meta: np.linspace(0.0, meta.duration, n).tolist()


def encoded_indices(frames: torch.Tensor) -> list[int]:
    return [V.frame_index_of(f) for f in frames.cpu().numpy()]


# ----------------------------------------------------------------- frame_index (pure)

CFR = np.stack([np.arange(10) * 0.04, np.arange(1, 11) * 0.04], axis=1)  # 25 fps, 10 frames


def test_cfr_mapping_boundaries_negative_and_past_end() -> None:
    tl = Timeline.from_table(CFR)
    assert tl.num_frames == 10 and tl.duration == pytest.approx(0.4)
    got = tl.indices_at([-5.0, -0.001, 0.0, 0.039, 0.04, 0.041, 0.2, 0.359, 0.36, 0.399, 0.4, 99.0])
    assert got.tolist() == [0, 0, 0, 0, 1, 1, 5, 8, 9, 9, 9, 9]


def test_float32_boundaries_select_the_frame_starting_there() -> None:
    # decord stores times as float32: 0.2 -> 0.200000003; a stamp of 0.2 must still give frame 5.
    tl = Timeline.from_table(CFR.astype(np.float32))
    assert tl.indices_at(np.arange(10) * 0.04).tolist() == list(range(10))
    big = np.arange(3600 * 25, 3600 * 25 + 5) / 25.0  # an hour in: float32 error ~0.1 ms
    tl = Timeline.from_table(np.stack([big, big + 0.04], 1).astype(np.float32))
    assert tl.indices_at((np.arange(5) * 0.04).tolist()).tolist() == [0, 1, 2, 3, 4]


def test_vfr_gaps_map_to_the_frame_on_screen() -> None:
    starts = np.array(V.vfr_times(10))  # 0, .04, .12, .24, .28, .30, .34, .42, .54, .58
    table = np.stack([starts, np.append(starts[1:], starts[-1] + 0.04)], 1)
    tl = Timeline.from_table(table)
    # Inside the 120 ms gap after 0.12 the frame started at 0.12 is still displayed.
    assert tl.indices_at([0.119, 0.12, 0.2, 0.239, 0.24]).tolist() == [1, 2, 2, 2, 3]
    # Not round(t * mean_fps): 0.5 s is frame 7 (started 0.42), not frame ~8.
    assert tl.indices_at([0.5]).tolist() == [7]
    meta = tl.segment().meta()
    assert meta.num_frames == 10
    assert meta.duration == pytest.approx(0.62)
    assert meta.native_fps == pytest.approx(10 / 0.62)


def test_stream_start_offset_is_removed_whether_or_not_the_table_has_it() -> None:
    without = Timeline.from_table(CFR)
    with_offset = Timeline.from_table(CFR + 1.5)
    np.testing.assert_allclose(with_offset.starts, without.starts)
    assert with_offset.indices_at([0.0, 0.1, 0.39]).tolist() == without.indices_at([0.0, 0.1, 0.39]).tolist()


def test_sanity_clamp_keeps_the_valid_prefix() -> None:
    starts = np.array([0.0, 0.04, 0.08, np.nan, 0.16])
    assert valid_prefix(starts) == 3
    assert valid_prefix(np.array([0.0, 0.04, 0.02, 0.12])) == 2  # a backwards jump
    assert valid_prefix(np.array([0.0, 0.0, 0.04])) == 3  # equal starts are allowed
    table = np.stack([[0.0, 0.04, 0.08, 0.12, 0.16], [0.04, 0.08, 0.12, 0.16, 0.2]], 1)
    assert Timeline.from_table(table, reported_frames=3).num_frames == 3  # len(vr) caps the table
    assert Timeline.from_table(table, reported_frames=99).num_frames == 5  # ...and vice versa
    with pytest.raises(ValueError, match="valid timestamp"):
        Timeline.from_table(np.array([[np.nan, np.nan]]))


def test_last_frame_duration_fallbacks() -> None:
    ts_like = np.stack([CFR[:, 0], CFR[:, 0]], 1)  # MPEG-TS: decord reports end == start
    assert Timeline.from_table(ts_like).duration == pytest.approx(0.4)  # median gap
    one = Timeline.from_table(np.array([[0.0, 0.0]]), fallback_fps=30)
    assert one.duration == pytest.approx(1 / 30, abs=1e-6)
    single = Timeline.from_table(np.array([0.0]))
    assert single.duration == 0.0
    assert single.segment().meta() == ClipMeta(duration=0.0, native_fps=0.0, num_frames=1)
    assert single.segment().indices_at([0.0, 1.0]).tolist() == [0, 0]


def test_a_guessed_last_frame_duration_cannot_stretch_a_sparse_clip() -> None:
    """No end for the last frame: the median gap is a frame interval for dense video, but for
    3 frames an hour apart it would add half an hour; the guess is capped at 1 s."""
    starts = np.array([0.0, 1800.0, 3600.0])
    assert Timeline.from_table(np.stack([starts, starts], 1)).duration == pytest.approx(3601.0)
    assert Timeline.from_table(starts, fallback_fps=1 / 1800).duration == pytest.approx(3601.0)
    known = np.stack([starts, [1800.0, 3600.0, 4200.0]], 1)  # the container says 600 s
    assert Timeline.from_table(known).duration == pytest.approx(4200.0)
    one_fps = np.arange(5.0)  # 1 fps, end unknown: still the median gap, exactly
    assert Timeline.from_table(np.stack([one_fps, one_fps], 1)).duration == pytest.approx(5.0)
    assert Timeline.from_table(np.array([[0.0, 0.0]]), fallback_fps=1 / 1800).duration == 1.0


def test_segment_trim_maps_relative_stamps_and_times() -> None:
    tl = Timeline.from_table(CFR)
    seg = tl.segment(0.1, 0.3)  # frame 2 (0.08) is on screen at 0.1; frames up to 7 (0.28) start < 0.3
    assert (seg.first, seg.last) == (2, 7)
    assert seg.meta() == ClipMeta(duration=0.2, native_fps=25.0, num_frames=6)  # 5 start inside
    idx = seg.indices_at([-1.0, 0.0, 0.02, 0.1, 0.199, 5.0])
    assert idx.tolist() == [2, 2, 3, 5, 7, 7]
    # Frame 2 started before the segment: it is shown from the segment start, time 0.
    assert seg.times_of(idx) == pytest.approx([0.0, 0.0, 0.02, 0.1, 0.18, 0.18])
    assert tl.segment(None, 0.12).last == 2  # frame 3 starts exactly at the end: excluded
    assert tl.segment(-3.0, 99.0).meta().num_frames == 10  # clamped to the video
    for bad in [(0.4, None), (0.5, 0.6), (0.2, 0.2), (0.3, 0.1)]:
        with pytest.raises(ValueError):
            tl.segment(*bad)
    with pytest.raises(ValueError, match="finite"):
        tl.segment().indices_at([float("nan")])


# ------------------------------------------------------- decord_cpu vs independent PyAV

PROBE_STAMPS = {
    # frame starts, mid-frame, just before a boundary, past the end, negative
    "h264_gop250": [0.0, 0.5, 0.52, 1.0, 1.333, 1.959, 1.96, 2.5, -0.2],
    "h264_short_gop_b": [1.9, 0.0, 0.44, 0.39, 1.21, 0.8, 1.96, 3.0],
    "vp9": [0.0, 0.1, 0.7, 1.23, 1.99, 5.0],
    "vp8": [0.0, 0.37, 0.4, 0.83, 1.41, 1.79, 1.95],
    "vfr": [0.0, 0.05, 0.119, 0.12, 0.2, 0.5, 0.9, 1.3, 1.77, 1.78, 9.0],
    "vfr_offset_mkv": [0.0, 0.119, 0.12, 0.5, 1.0, 1.78],
    "offset_mp4": [0.0, 0.1, 0.5, 0.96, 1.5, 2.0],
    "offset_webm": [0.0, 0.1, 0.5, 0.96, 1.5],
    "odd_size": [0.0, 0.3, 0.49, 0.5, 0.9],
}


@pytest.mark.parametrize("name", sorted(PROBE_STAMPS))
def test_native_size_matches_pyav(corpus, dec, name) -> None:
    path, stamps = corpus[name], PROBE_STAMPS[name]
    clip = dec.decode(path, fixed(stamps))
    ref_frames, ref_times = V.pyav_at(path, stamps)
    assert isinstance(clip, DecodedClip)
    assert clip.frames.dtype == torch.uint8 and clip.frames.device.type == "cpu"
    assert tuple(clip.frames.shape) == ref_frames.shape
    assert clip.times == pytest.approx(ref_times, abs=1e-3)
    diff = np.abs(clip.frames.numpy().astype(np.int16) - ref_frames.astype(np.int16))
    assert diff.max() <= 2, f"frames differ from PyAV by up to {diff.max()}"
    assert encoded_indices(clip.frames) == [V.frame_index_of(f) for f in ref_frames]


@pytest.fixture(scope="module")
def sparse_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """3 frames at 0, 1800 and 3600 s (a paused camera): as encoded, the MP4 shows the last one
    for 1 s (1 fps); with its last ``stts`` delta zeroed the container gives no end at all."""
    d = tmp_path_factory.mktemp("sparse")
    src = V._encode(
        d / "sparse.mp4",
        [0, 1_800_000, 3_600_000],
        Fraction(1, 1000),
        codec="libx264",
        width=64,
        height=48,
        rate=1,
        gop=250,
    )
    return {"with_end": src, "no_end": H.drop_last_sample_duration(src, d / "sparse_no_end.mp4")}


@pytest.mark.parametrize("name", ["with_end", "no_end"])
def test_a_sparse_clip_lasts_what_a_player_shows(sparse_clips, dec, name) -> None:
    """Not 5400 s (last start + the median gap of 1800 s) when the container gives no end."""
    clip = dec.decode(sparse_clips[name], fixed([0.0, 1800.0, 3599.0, 3600.0, 9999.0]))
    assert clip.meta.num_frames == 3
    assert clip.meta.duration == pytest.approx(3601.0, abs=1e-3)
    assert clip.meta.native_fps == pytest.approx(3 / 3601.0)
    assert encoded_indices(clip.frames) == [0, 1, 1, 2, 2]
    assert clip.times == pytest.approx([0.0, 1800.0, 1800.0, 3600.0, 3600.0], abs=1e-3)


def test_meta_describes_the_real_frames(corpus, dec) -> None:
    seen: list[ClipMeta] = []

    def sampler(meta: ClipMeta) -> list[float]:
        seen.append(meta)
        return [0.0]

    dec.decode(corpus["h264_gop250"], sampler)
    dec.decode(corpus["vfr"], sampler)
    dec.decode(corpus["offset_mp4"], sampler)
    assert seen[0] == ClipMeta(duration=2.0, native_fps=25.0, num_frames=50)
    assert seen[1].num_frames == 30 and seen[1].duration == pytest.approx(1.82)
    assert seen[1].native_fps == pytest.approx(30 / 1.82)  # not the container's nominal 25
    assert seen[2] == ClipMeta(duration=1.0, native_fps=25.0, num_frames=25)  # offset removed


@pytest.mark.parametrize("size", [32, 40])  # 32: decord fails on AVX-512 and hands over; 40: decord scales
@pytest.mark.parametrize("name", ["h264_gop250", "vfr", "odd_size", "vp9"])
def test_resized_matches_pyav_resize(corpus, dec, name, size) -> None:
    path, stamps = corpus[name], PROBE_STAMPS[name][:5]
    clip = dec.decode(path, fixed(stamps), size=size)
    assert tuple(clip.frames.shape) == (len(stamps), size, size, 3)
    _, ref_times = V.pyav_at(path, stamps)
    assert clip.times == pytest.approx(ref_times, abs=1e-3)
    with av.open(path) as c:
        all_frames = sorted(c.decode(video=0), key=lambda f: f.time)
        t0 = all_frames[0].time
        by_time = {round(f.time - t0, 3): f for f in all_frames}
        ref = np.stack(
            [
                by_time[round(t, 3)]
                .reformat(width=size, height=size, format="rgb24", interpolation="BICUBIC")
                .to_ndarray()
                for t in clip.times
            ]
        )
    diff = np.abs(clip.frames.cpu().numpy().astype(np.int16) - ref.astype(np.int16))
    # Scaler differences on the stripe texture only: FFmpeg's bicubic in the CPU decoders, torch's
    # antialiased bicubic on the device for nvdec (kvideo.decode.device_frames), further off there.
    assert diff.mean() <= (12 if isinstance(dec, NvdecDecoder) else 6), diff.mean()
    assert encoded_indices(clip.frames) == [V.frame_index_of(f) for f in ref]


# ------------------------------------------------------- edit lists (stream-copy cuts)


def test_stream_copy_cut_returns_the_frames_a_player_shows(corpus, dec) -> None:
    """``ffmpeg -ss 1.32 -c copy`` of a 6 s clip: 33 pre-roll frames sit before the edit
    list's start. A player shows 117 frames over 4.68 s, starting with source frame 33;
    decord alone reports 150 frames / 6.0 s and returned source frames
    [0, 21, 42, 64, 85, 74, 95, 116]-style shifted pixels for the first GOP."""
    path = corpus["stream_copy_cut"]
    clip = dec.decode(path, linspace_sampler(8))
    assert clip.meta == ClipMeta(duration=4.68, native_fps=25.0, num_frames=117)
    ref, ref_times = V.pyav_at(path, np.linspace(0.0, 4.68, 8).tolist())
    assert len(ref_times) == 8 and ref_times[-1] == pytest.approx(4.64)
    assert clip.times == pytest.approx(ref_times, abs=1e-6)
    assert encoded_indices(clip.frames) == [33 + round(t / 0.04) for t in ref_times]
    assert np.array_equal(clip.frames.numpy(), ref)


def test_stream_copy_cut_trim_and_first_gop(corpus, dec) -> None:
    """Every frame of the first (partly pre-roll) GOP, and a trim inside it."""
    path = corpus["stream_copy_cut"]
    stamps = [0.04 * i for i in range(20)]
    clip = dec.decode(path, fixed(stamps))
    assert encoded_indices(clip.frames) == list(range(33, 53))
    clip = dec.decode(path, fixed([0.0, 0.1]), start=0.2, end=1.0)
    assert clip.meta.num_frames == 20 and encoded_indices(clip.frames) == [38, 40]


def test_one_get_batch_with_deduplicated_indices(corpus, decord_dec, monkeypatch) -> None:
    calls: list[list[int]] = []
    original = decord.VideoReader.get_batch

    def spy(self, indices):
        calls.append(list(np.asarray(indices).tolist()))
        return original(self, indices)

    monkeypatch.setattr(decord.VideoReader, "get_batch", spy)
    stamps = [0.5, 0.0, 0.01, 0.5, 1.0, 0.0]  # short-clip style repeats, out of order
    clip = decord_dec.decode(corpus["h264_gop250"], fixed(stamps))
    assert calls == [[0, 12, 25]]
    assert encoded_indices(clip.frames) == [12, 0, 0, 12, 25, 0]
    assert clip.times == pytest.approx([0.48, 0.0, 0.0, 0.48, 1.0, 0.0])
    assert torch.equal(clip.frames[1], clip.frames[5])


def test_num_threads_and_size_reach_the_reader(corpus, monkeypatch) -> None:
    kwargs_seen: list[dict] = []
    original = decord.VideoReader.__init__

    def spy(self, uri, **kwargs):
        kwargs_seen.append(kwargs)
        original(self, uri, **kwargs)

    monkeypatch.setattr(decord.VideoReader, "__init__", spy)
    d = build_decoder(DecoderConfig(num_threads=0))
    d.decode(corpus["vp9"], fixed([0.0]), size=40)
    assert kwargs_seen[0]["num_threads"] == 0
    assert (kwargs_seen[0]["width"], kwargs_seen[0]["height"]) == (40, 40)


# ----------------------------------------------------------------------- trimming


def test_trim_start_end(corpus, dec) -> None:
    path = corpus["h264_gop250"]
    seen: list[ClipMeta] = []

    def sampler(meta: ClipMeta) -> list[float]:
        seen.append(meta)
        return [0.0, 0.25, 0.5, 0.99, 7.0]

    clip = dec.decode(path, sampler, start=0.5, end=1.5)
    # Frame 12 (0.48 s) is on screen at 0.5 s, frames 13..37 start inside [0.5, 1.5).
    assert seen == [ClipMeta(duration=1.0, native_fps=25.0, num_frames=26)]
    assert clip.meta == seen[0]
    assert encoded_indices(clip.frames) == [12, 18, 25, 37, 37]  # past `end` -> last frame inside
    assert clip.times == pytest.approx([0.0, 0.22, 0.5, 0.98, 0.98])  # relative to start
    ref, _ = V.pyav_at(path, [0.5, 0.75, 1.0, 1.49, 1.49])
    assert np.abs(clip.frames.numpy().astype(int) - ref.astype(int)).max() <= 2


def test_trim_on_offset_start_file_is_relative_to_first_frame(corpus, dec) -> None:
    clip = dec.decode(corpus["offset_webm"], fixed([0.0, 0.2]), start=0.4, end=0.8)
    assert clip.meta == ClipMeta(duration=0.4, native_fps=25.0, num_frames=10)
    assert encoded_indices(clip.frames) == [10, 15]


def test_trim_outside_the_video_is_a_decode_error(corpus, dec) -> None:
    with pytest.raises(DecodeError) as info:
        dec.decode(corpus["h264_gop250"], fixed([0.0]), start=5.0, end=6.0)
    assert info.value.reason == "decode_error" and "after the video's end" in info.value.detail


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "missing"),
        ("directory", "not_a_file"),
        ("empty", "empty"),
        ("text", "unreadable"),
        ("truncated", "unreadable"),  # plain MP4 cut in half: the trailing moov is gone
        ("audio_only", "no_video_stream"),
        ("corrupt", "decode_error"),  # index intact, NAL data garbage
        # A video stream is there but cannot be opened as video: not audio-only.
        ("unknown_codec_tag", "unreadable"),  # decord: "cannot find video stream", as for audio
        ("garbage_avcc", "unreadable"),  # SPS/PPS overwritten
    ],
)
def test_error_reasons(corpus, dec, name, reason) -> None:
    with pytest.raises(DecodeError) as info:
        dec.decode(corpus[name], linspace_sampler(8))
    assert info.value.reason == reason
    assert info.value.path == corpus[name]


def test_a_video_stream_that_cannot_be_opened_is_not_called_audio_only(corpus, dec) -> None:
    """decord says "cannot find video stream" both for an audio-only file and for a video
    stream FFmpeg has no decoder for (a fuzzed sample entry); PyAV's stream list tells them
    apart, and the detail says which it was."""
    with pytest.raises(DecodeError) as info:
        dec.decode(corpus["unknown_codec_tag"], linspace_sampler(8))
    assert info.value.reason == "unreadable"
    assert "video stream is there but cannot be opened as video" in info.value.detail
    with pytest.raises(DecodeError) as info:
        dec.decode(corpus["audio_only"], linspace_sampler(8))
    assert (info.value.reason, info.value.detail) == ("no_video_stream", "container has no video stream")


# Every file of the corpus that has bytes (so not "missing", "directory"): good and bad alike.
IN_MEMORY = [
    "h264_short_gop_b",
    "vp9",
    "vfr_offset_mkv",
    "mpegts_b",
    "stream_copy_cut",  # the edit-list hand-over from decord to PyAV
    "truncated_faststart",  # the tail guard's salvage
    "corrupt",
    "audio_only",  # the PyAV stream probe on decord's error path
    "text",
    "empty",
    "truncated",
    "unknown_codec_tag",
]


@pytest.mark.parametrize("name", IN_MEMORY)
def test_a_file_in_memory_decodes_as_the_file_does(corpus, dec, name) -> None:
    """A tar shard's member is decoded from its bytes (``VideoBytes``), never written to disk:
    same frames and times, or the same reason under the member's name, as the file on disk."""

    def outcome(source):
        try:
            clip = dec.decode(source, linspace_sampler(8), size=32)
        except DecodeError as e:
            return e.reason, e.path
        return clip.frames, clip.times

    on_disk = outcome(corpus[name])
    in_memory = outcome(VideoBytes("shard.tar#member.mp4", Path(corpus[name]).read_bytes()))
    if isinstance(on_disk[0], str):
        assert in_memory == (on_disk[0], "shard.tar#member.mp4")
    else:
        assert torch.equal(in_memory[0], on_disk[0]) and in_memory[1] == on_disk[1]


def test_missing_parent_directory_is_missing(dec, tmp_path) -> None:
    f = V.write_bytes(tmp_path / "file", b"x")
    with pytest.raises(DecodeError) as info:
        dec.decode(os.path.join(f, "child.mp4"), fixed([0.0]))
    assert info.value.reason == "missing"


def test_a_display_matrix_rotation_follows_one_rule_in_every_cpu_decoder(tmp_path) -> None:
    """The stored orientation, the display matrix not applied, whichever decoder: decord cannot
    see the matrix, so applying it only where PyAV can would make the decoders disagree."""
    path = V.make_h264(tmp_path / "upright.mp4", seconds=0.5, fps=10, gop=5, rotation=90)
    with av.open(path) as container:
        assert next(container.decode(video=0)).rotation == 90  # the matrix is there
    for size in (None, Resize("keep_aspect", 32)):
        clips = [
            build_decoder(DecoderConfig(name=n)).decode(path, fixed([0.0, 0.3]), size=size)
            for n in ("pyav_cpu", "decord_cpu")
        ]
        assert clips[0].frames.shape == clips[1].frames.shape
        assert clips[0].frames.shape[1:3] == ((48, 64) if size is None else (24, 32))
        assert torch.equal(clips[0].frames, clips[1].frames)


def test_a_nul_byte_in_a_path_is_a_counted_skip(dec, tmp_path) -> None:
    """``os.stat`` raises ValueError for such a name: the sample is skipped as ``unreadable``."""
    with pytest.raises(DecodeError) as info:
        dec.decode(str(tmp_path / "a\0b.mp4"), fixed([0.0]))
    assert (info.value.reason, info.value.detail) == ("unreadable", "the path holds a NUL byte")
    assert "\0" not in info.value.path


@pytest.mark.parametrize("name", ["text", "truncated"])
def test_decord_prints_nothing_of_its_own_for_a_file_it_cannot_open(corpus, decord_dec, name, capfd) -> None:
    """decord's "ERROR opening: ..." and FFmpeg's "moov atom not found" lines stay off stderr:
    the skip is counted and reported by kvideo."""
    with pytest.raises(DecodeError):
        decord_dec.decode(corpus[name], linspace_sampler(8))
    assert capfd.readouterr().err == ""


def test_a_line_written_to_stderr_during_a_capture_is_kept(capfd) -> None:
    from kvideo.decode.stderr_filter import DECORD_OPEN_NOISE, restore_stderr, stderr_without

    with stderr_without(DECORD_OPEN_NOISE):
        os.write(2, b"[12:00:00] /project/src/video/video_reader.cc:86: ERROR opening: x.mp4, bad\n")
        os.write(2, b"another thread's line\n")
    assert capfd.readouterr().err == "another thread's line\n"
    with stderr_without(DECORD_OPEN_NOISE):  # a deadline gives stderr back from a hung open
        restore_stderr()
        os.write(2, b"after the deadline\n")
    assert capfd.readouterr().err == "after the deadline\n"


_PERMISSION_PROBE = """
import os, sys
from kvideo.decode.checks import check_video_file
from kvideo.decode.errors import DecodeError
if os.geteuid() == 0:
    os.setgid(65534); os.setuid(65534)  # root reads anything: check as 'nobody'
try:
    check_video_file(sys.argv[1])
except DecodeError as e:
    print(e.reason)
else:
    print("readable")
"""


def test_unreadable_permissions_are_reported(tmp_path) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)  # pytest's tmp dirs are 0700: 'nobody' could not even stat
        locked = V.write_bytes(Path(d) / "locked.mp4", b"\0" * 64)
        os.chmod(locked, 0o000)
        out = subprocess.run(
            [sys.executable, "-c", _PERMISSION_PROBE, locked],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
        )
    if "PermissionError" in out.stderr and "setuid" in out.stderr:
        pytest.skip("cannot drop privileges here")
    assert out.stdout.strip() == "permission", out.stderr[-2000:]


def test_truncated_faststart_salvages_the_frames_before_the_cut(corpus, dec) -> None:
    """A faststart MP4 cut at 60 %: the header promises 50 frames, 28 are in the file and the
    last of them is cut mid-packet. Stamps past the damage get the last frame before the tail
    guard, every time (decord alone decodes or fails depending on its read-ahead thread)."""
    for _ in range(3):
        clip = dec.decode(corpus["truncated_faststart"], linspace_sampler(8))
        assert clip.meta.num_frames == 28
        # 8 stamps over 1.12 s; frames 24..27 lie past the tail guard.
        assert encoded_indices(clip.frames) == [0, 4, 8, 12, 16, 20, 23, 23]
        assert clip.times == pytest.approx([0.0, 0.16, 0.32, 0.48, 0.64, 0.8, 0.92, 0.92], abs=1e-3)


def test_failed_decode_releases_the_reader(corpus, decord_dec, monkeypatch) -> None:
    """decord leaks memory through long-lived readers: no reader may outlive decode(),
    not even through the traceback of the DecodeError the caller keeps."""
    readers: list[weakref.ref] = []
    original = decord.VideoReader.__init__

    def spy(self, *args, **kwargs):
        readers.append(weakref.ref(self))
        original(self, *args, **kwargs)

    monkeypatch.setattr(decord.VideoReader, "__init__", spy)
    clip = decord_dec.decode(corpus["vp9"], linspace_sampler(4))
    kept: list[DecodeError] = []
    try:
        decord_dec.decode(corpus["corrupt"], linspace_sampler(8))
    except DecodeError as e:
        kept.append(e)
    assert kept and len(readers) == 2  # vp9 + corrupt (which then goes to PyAV)
    assert all(r() is None for r in readers), "a VideoReader outlived decode()"
    assert clip.frames.shape[0] == 4  # the frames (DLPack views) stay valid without the reader


# ------------------------------------------------------------------------ timeout


@pytest.mark.parametrize("name", CPU_DECODERS)
def test_timeout_abandons_the_call_and_the_decoder_recovers(corpus, name) -> None:
    d = build_decoder(DecoderConfig(name=name, timeout_s=0.3))

    def slow(meta: ClipMeta) -> list[float]:
        time.sleep(1.5)  # stands in for decord hanging inside the decode
        return [0.0]

    t0 = time.perf_counter()
    with pytest.raises(DecodeError) as info:
        d.decode(corpus["h264_gop250"], slow)
    assert info.value.reason == "timeout"
    assert time.perf_counter() - t0 < 1.0
    clip = d.decode(corpus["h264_gop250"], fixed([1.0]))  # a fresh worker, not stuck behind
    assert encoded_indices(clip.frames) == [25]


def test_sampler_exceptions_propagate_unchanged(corpus, dec) -> None:
    def broken(meta: ClipMeta) -> list[float]:
        raise KeyError("sampler bug")

    with pytest.raises(KeyError, match="sampler bug"):
        dec.decode(corpus["vp9"], broken)
    with pytest.raises(ValueError, match="no timestamps"):
        dec.decode(corpus["vp9"], fixed([]))


def _decode_in_child(dec, path, q) -> None:
    q.put(encoded_indices(dec.decode(path, fixed([0.4])).frames))


def test_decoder_survives_fork_and_pickle(corpus, dec) -> None:
    path = corpus["vp9"]
    dec.decode(path, fixed([0.0]))  # parent has a worker thread now; a forked child has not
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_decode_in_child, args=(dec, path, q))
    p.start()
    got = q.get(timeout=30)
    p.join(timeout=30)
    assert got == [10] and p.exitcode == 0
    clone = pickle.loads(pickle.dumps(dec))  # spawn-started DataLoader workers pickle it
    assert encoded_indices(clone.decode(path, fixed([0.4])).frames) == [10]


# ------------------------------------------------------------ registry and GPU


def test_registry_and_light_import() -> None:
    assert {"decord_cpu", "decord_gpu", "pyav_cpu"} <= set(DECODERS.names())
    code = (
        "import sys, kvideo.decode; print(sorted(m for m in ('torch', 'decord', 'av') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


@pytest.mark.skipif(
    decord.get_global_func("device_api.gpu", allow_missing=True) is not None,
    reason="this decord has CUDA",
)
def test_gpu_factory_fails_at_construction_in_one_clear_line() -> None:
    with pytest.raises(RuntimeError) as info:
        build_decoder(DecoderConfig(name="decord_gpu", device_id=-1), local_rank=0)
    msg = str(info.value)
    assert "\n" not in msg
    assert "CPU-only" in msg and "decord_cpu" in msg and "USE_CUDA" in msg


# ------------------------------------------------------------ known decord bugs


@pytest.mark.xfail(
    strict=True,
    reason="decord2 3.4 returns frames one GOP late for H.264 with "
    "B-frames in MPEG-TS (PyAV is right); use MP4/MKV or remux",
)
def test_mpegts_with_bframes(corpus, decord_dec) -> None:
    stamps = [0.0, 0.5, 1.0]
    clip = decord_dec.decode(corpus["mpegts_b"], fixed(stamps))
    ref, _ = V.pyav_at(corpus["mpegts_b"], stamps)
    assert encoded_indices(clip.frames) == [V.frame_index_of(f) for f in ref]


def test_pyav_reads_mpegts_with_bframes(corpus) -> None:
    stamps = [0.0, 0.5, 1.0]
    clip = build_decoder(DecoderConfig(name="pyav_cpu")).decode(corpus["mpegts_b"], fixed(stamps))
    ref, _ = V.pyav_at(corpus["mpegts_b"], stamps)
    assert encoded_indices(clip.frames) == [V.frame_index_of(f) for f in ref]


@pytest.mark.parametrize(
    "rule",
    [Resize("keep_aspect", 40), Resize("keep_aspect", 96), Resize("max_pixels", 64, 0, 16)],
    ids=["keep_aspect_40", "keep_aspect_96", "max_pixels_16"],
)
@pytest.mark.parametrize("name", ["h264_gop250", "odd_size", "vp9"])
def test_resize_rules_give_each_decoder_the_rules_size_and_the_same_frames(corpus, dec, name, rule) -> None:
    path, stamps = corpus[name], PROBE_STAMPS[name][:4]
    with av.open(path) as c:
        ctx = c.streams.video[0].codec_context
        height, width = rule.output_size(ctx.width, ctx.height)
    clip = dec.decode(path, fixed(stamps), size=rule)
    assert tuple(clip.frames.shape) == (len(stamps), height, width, 3)
    reference = PyAVDecoder(timeout_s=None).decode(path, fixed(stamps), size=rule)
    assert clip.times == reference.times
    assert encoded_indices(clip.frames) == encoded_indices(reference.frames)
