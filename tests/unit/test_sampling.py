"""Sampling policies: golden vectors from the peer projects, and properties for all."""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch

from kvideo.config.decoder import DecoderConfig
from kvideo.data.clip_dataset import SamplingSpec, sample_timestamps
from kvideo.decode import ClipMeta, build_decoder
from kvideo.decode.frame_index import Timeline
from kvideo.sampling import timestamps
from tests.helpers import videos as V

POLICIES = ("uniform", "molmo2", "molmo2_no_max_fps", "qwen", "random_segment")
SPANNING = ("uniform", "molmo2", "molmo2_no_max_fps")  # first stamp 0, last stamp the duration


def stamps(policy: str, duration: float, **kw) -> list[float]:
    params = {"fps": 2.0, "min_frames": 4, "max_frames": 16} | kw
    return timestamps(policy, duration=duration, **params)


# uniform (KempnerForge) -------------------------------------------------------------


def test_uniform_design_examples() -> None:
    assert stamps("uniform", 2.0, fps=2, min_frames=4) == pytest.approx([0, 2 / 3, 4 / 3, 2])
    long = stamps("uniform", 100.0, max_frames=16)
    assert len(long) == 16 and long[0] == 0 and long[-1] == pytest.approx(100)
    assert np.diff(long) == pytest.approx([100 / 15] * 15)


def test_uniform_spacing_is_duration_over_n_minus_one() -> None:
    # 5 s at 2 fps -> round(10) = 10 stamps, spaced 5/9 (not 1/fps = 0.5)
    got = stamps("uniform", 5.0)
    assert len(got) == 10
    assert np.diff(got) == pytest.approx([5 / 9] * 9)


@pytest.mark.parametrize("duration", [0.0, -1.0])
def test_uniform_degenerate_duration(duration: float) -> None:
    assert stamps("uniform", duration) == [0.0]


def test_uniform_single_frame_budget() -> None:
    assert stamps("uniform", 10.0, min_frames=1, max_frames=1) == [0.0]


def test_uniform_uses_pythons_round() -> None:
    # round(2.5) == 2 (banker's rounding): 1.25 s at 2 fps -> 2 frames
    assert len(stamps("uniform", 1.25, min_frames=1)) == 2
    assert len(stamps("uniform", 1.75, min_frames=1)) == 4  # round(3.5) == 4


# molmo2 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (1.1, [0, 1, 1.1]),
        (2.0, [0, 1, 2]),
        (2.001, [0, 1, 2, 2.001]),
        (3.0, [0, 1, 2, 3]),
        (3.001, list(np.linspace(0, 3.001, 4))),
    ],
)
def test_molmo2_golden(duration: float, expected: list[float]) -> None:
    got = timestamps("molmo2", duration=duration, fps=1.0, min_frames=1, max_frames=4)
    assert got == pytest.approx(expected)


def test_molmo2_pads_up_to_min_frames() -> None:
    got = timestamps("molmo2", duration=1.1, fps=1.0, min_frames=4, max_frames=4)
    assert got == pytest.approx(list(np.linspace(0, 1.1, 4)))


@pytest.mark.parametrize("duration", [0.3, 1.1, 2.0, 2.001, 3.0, 3.001, 100.0])
def test_molmo2_no_max_fps_is_always_linspace_over_max_frames(duration: float) -> None:
    # Molmo2's uniform_last_frame with max_fps=None: no fps-spaced branch, however short the clip.
    for fps in (0.5, 1.0, 30.0):
        got = timestamps("molmo2_no_max_fps", duration=duration, fps=fps, min_frames=1, max_frames=4)
        assert got == pytest.approx(list(np.linspace(0, duration, 4)))


def test_molmo2_no_max_fps_degenerate_duration_is_one_stamp() -> None:
    assert timestamps("molmo2_no_max_fps", duration=0.0, fps=2, min_frames=1, max_frames=4) == [0.0]


# qwen ---------------------------------------------------------------------------------


def test_qwen_design_example() -> None:
    got = timestamps("qwen", duration=1.0, fps=2, min_frames=4, max_frames=16, num_frames=30, native_fps=30)
    assert got == pytest.approx([0 / 30, 10 / 30, 19 / 30, 29 / 30])


def test_qwen_long_clip_even_count_capped() -> None:
    got = timestamps("qwen", duration=100, fps=2, min_frames=4, max_frames=15, num_frames=3000, native_fps=30)
    assert len(got) == 14  # floor_even(15)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_qwen_never_raises_on_short_clips(num_frames: int) -> None:
    got = timestamps(
        "qwen",
        duration=num_frames / 30,
        fps=2,
        min_frames=8,
        max_frames=16,
        num_frames=num_frames,
        native_fps=30,
    )
    assert 1 <= len(got) <= num_frames


def test_qwen_needs_frame_metadata() -> None:
    with pytest.raises(ValueError, match="num_frames or native_fps"):
        timestamps("qwen", duration=3, fps=2, min_frames=4, max_frames=8)


# qwen on variable-frame-rate video ------------------------------------------------------

VFR_STARTS = V.vfr_times()  # 30 frames, gaps of 20-120 ms
VFR_DURATION = 1.82  # last start 1.78 + its 40 ms display


def qwen_vl_utils_indices(
    total_frames: int, video_fps: float, *, fps: float, min_frames: int, max_frames: int
) -> list[int]:
    """qwen-vl-utils' ``smart_nframes`` (FRAME_FACTOR 2) and its ``torch.linspace(start_frame,
    end_frame, nframes).round()``, written out again as the reference."""

    def floor_by_factor(x: float) -> int:
        return math.floor(x / 2) * 2

    min_n = math.ceil(min_frames / 2) * 2
    max_n = floor_by_factor(max_frames)
    nframes = floor_by_factor(min(min(max(total_frames / video_fps * fps, min_n), max_n), total_frames))
    assert 2 <= nframes <= total_frames  # where qwen-vl-utils would raise; keep the reference honest
    return torch.linspace(0, total_frames - 1, nframes).round().long().tolist()


def frames_on_screen(starts: list[float], stamps: list[float]) -> list[int]:
    """The decoder contract: the frame displayed at t is the last one whose start <= t."""
    return (np.searchsorted(starts, np.asarray(stamps) + 1e-6, side="right") - 1).tolist()


def test_qwen_with_frame_starts_returns_the_starts_of_qwen_vl_utils_picks() -> None:
    kw: dict[str, Any] = {"fps": 8.0, "min_frames": 4, "max_frames": 32}
    expected = qwen_vl_utils_indices(30, 30 / VFR_DURATION, **kw)
    got = timestamps(
        "qwen",
        duration=VFR_DURATION,
        num_frames=30,
        native_fps=30 / VFR_DURATION,
        frame_starts=VFR_STARTS,
        **kw,
    )
    assert got == [VFR_STARTS[i] for i in expected]
    assert frames_on_screen(VFR_STARTS, got) == expected


def test_qwen_without_frame_starts_misses_qwen_vl_utils_picks_on_vfr() -> None:
    # Why frame_starts exist: index / mean fps lands on other frames when the gaps vary.
    kw: dict[str, Any] = {"fps": 8.0, "min_frames": 4, "max_frames": 32}
    got = timestamps("qwen", duration=VFR_DURATION, num_frames=30, native_fps=30 / VFR_DURATION, **kw)
    assert frames_on_screen(VFR_STARTS, got) != qwen_vl_utils_indices(30, 30 / VFR_DURATION, **kw)


def test_qwen_with_frame_starts_matches_the_constant_rate_stamps_on_cfr() -> None:
    kw: dict[str, Any] = {
        "duration": 2.0,
        "fps": 2.0,
        "min_frames": 4,
        "max_frames": 16,
        "num_frames": 50,
        "native_fps": 25.0,
    }
    starts = [i / 25 for i in range(50)]
    assert timestamps("qwen", frame_starts=starts, **kw) == pytest.approx(timestamps("qwen", **kw))


def test_qwen_refuses_frame_starts_that_do_not_match_num_frames() -> None:
    message = r"frame_starts must hold one start per frame \(30\), got shape \(29,\)"
    with pytest.raises(ValueError, match=message):
        timestamps(
            "qwen",
            duration=VFR_DURATION,
            fps=8,
            min_frames=4,
            max_frames=32,
            num_frames=30,
            native_fps=30 / VFR_DURATION,
            frame_starts=VFR_STARTS[:29],
        )


def test_segment_meta_frame_starts_select_each_of_its_frames() -> None:
    starts = np.array(VFR_STARTS)
    tl = Timeline.from_table(np.stack([starts, np.append(starts[1:], VFR_DURATION)], 1))
    seg = tl.segment(0.31, 1.5)  # starts mid-frame: frame 5 (0.30-0.34) is on screen at 0.31
    meta = seg.meta()
    frame_starts = meta.frame_starts
    assert frame_starts is not None
    assert len(frame_starts) == meta.num_frames == seg.last - seg.first + 1
    assert frame_starts[0] == 0.0 and seg.first == 5
    assert seg.indices_at(np.asarray(frame_starts)).tolist() == list(range(seg.first, seg.last + 1))
    assert meta == ClipMeta(meta.duration, meta.native_fps, meta.num_frames)  # not part of ==


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return V.make_vfr(tmp_path_factory.mktemp("vfr") / "vfr.mp4")


def qwen_sampler(seen: list[ClipMeta], **budget):
    """What a dataset hands the decoder: the policy, fed every ClipMeta field."""

    def sample(meta: ClipMeta) -> list[float]:
        seen.append(meta)
        return timestamps(
            "qwen",
            duration=meta.duration,
            num_frames=meta.num_frames,
            native_fps=meta.native_fps,
            frame_starts=meta.frame_starts,
            **budget,
        )

    return sample


@pytest.mark.parametrize("decoder", ["decord_cpu", "pyav_cpu"])
@pytest.mark.parametrize(("start", "end"), [(None, None), (0.31, 1.5)])
def test_qwen_decodes_exactly_qwen_vl_utils_frames_of_a_real_vfr_clip(
    vfr_clip: str, decoder: str, start: float | None, end: float | None
) -> None:
    budget: dict[str, Any] = {"fps": 8.0, "min_frames": 4, "max_frames": 32}
    seen: list[ClipMeta] = []
    dec = build_decoder(DecoderConfig(name=decoder, num_threads=1, timeout_s=30.0))
    clip = dec.decode(vfr_clip, qwen_sampler(seen, **budget), start=start, end=end)
    (meta,) = seen
    if start is None:  # the whole clip: qwen-vl-utils' average fps is N / duration
        assert meta.num_frames == 30 and meta.native_fps == pytest.approx(30 / VFR_DURATION)
    first = 0 if start is None else 5  # frame 5 (0.30-0.34 s) is on screen at 0.31 s
    expected = [first + i for i in qwen_vl_utils_indices(meta.num_frames, meta.native_fps, **budget)]
    assert [V.frame_index_of(f) for f in clip.frames.cpu().numpy()] == expected
    offset = start or 0.0
    assert clip.times == pytest.approx([max(0.0, VFR_STARTS[i] - offset) for i in expected], abs=1e-3)


# random_segment -------------------------------------------------------------------


def test_random_segment_one_stamp_per_segment_and_reproducible() -> None:
    kw: dict[str, Any] = {"duration": 8.0, "fps": 1.0, "min_frames": 4, "max_frames": 8}
    a = timestamps("random_segment", seed=1, epoch=2, index=3, **kw)
    assert a == timestamps("random_segment", seed=1, epoch=2, index=3, **kw)
    assert a != timestamps("random_segment", seed=1, epoch=3, index=3, **kw)
    assert a != timestamps("random_segment", seed=1, epoch=2, index=4, **kw)
    assert len(a) == 8
    for i, t in enumerate(a):
        assert i <= t < i + 1  # segment i of 8 equal 1 s segments


# properties for every policy --------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_properties(policy: str) -> None:
    durations = [0.05, 0.5, 1.0, 1.7, 3.0, 10.0, 61.3, 3600.0]
    budgets = [(1, 1), (1, 4), (4, 4), (4, 16), (2, 32)]
    for duration, (lo, hi), fps in itertools.product(durations, budgets, [0.5, 2.0, 8.0]):
        native = 25.0
        got = timestamps(
            policy,
            duration=duration,
            fps=fps,
            min_frames=lo,
            max_frames=hi,
            num_frames=max(1, round(duration * native)),
            native_fps=native,
            index=7,
        )
        context = f"{policy} duration={duration} fps={fps} frames=[{lo},{hi}]: {got}"
        assert 1 <= len(got) <= hi, context
        assert got == sorted(got), context
        assert all(0.0 <= t <= duration + 1e-9 for t in got), context
        if policy in SPANNING and len(got) > 1:
            assert got[0] == 0.0 and got[-1] == pytest.approx(duration), context
        if policy in (*SPANNING, "random_segment") and duration * fps >= 1:
            assert len(got) >= lo, context


def test_unknown_policy_lists_choices() -> None:
    with pytest.raises(KeyError, match="random_segment"):
        timestamps("nope", duration=1, fps=1, min_frames=1, max_frames=1)


def test_unknown_policy_names_the_config_key() -> None:
    with pytest.raises(KeyError, match=r"unknown video\.sampling_policy 'nope'; choices: \[.*'uniform'"):
        timestamps("nope", duration=1, fps=1, min_frames=1, max_frames=1)


# argument checks (KempnerForge's sample_timestamps) -------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("budget", "message"),
    [
        # "fps must be positive": KempnerForge's own tests match these words
        ({"fps": 0.0}, r"fps must be positive and finite \(got 0\.0\)"),
        ({"fps": -2.0}, r"fps must be positive and finite \(got -2\.0\)"),
        ({"fps": float("nan")}, r"fps must be positive and finite \(got nan\)"),
        ({"min_frames": 0}, r"min_frames must be >= 1 \(got 0\)"),
        ({"min_frames": 8, "max_frames": 4}, r"min_frames \(8\) must be <= max_frames \(4\)"),
        ({"min_frames": 1, "max_frames": 0}, r"min_frames \(1\) must be <= max_frames \(0\)"),
    ],
)
def test_an_impossible_budget_is_refused_naming_the_argument_and_value(
    policy: str, budget: dict, message: str
) -> None:
    kw = {"fps": 2.0, "min_frames": 4, "max_frames": 16, "num_frames": 250, "native_fps": 25.0} | budget
    with pytest.raises(ValueError, match=message):
        timestamps(policy, duration=10.0, **kw)


def test_the_stable_signature_still_takes_every_documented_keyword() -> None:
    got = timestamps(
        "random_segment",
        duration=4.0,
        fps=1.0,
        min_frames=1,
        max_frames=8,
        num_frames=100,
        native_fps=25.0,
        seed=3,
        epoch=1,
        index=2,
    )
    assert len(got) == 4


def test_the_dataset_sampler_decodes_qwen_vl_utils_frames_of_a_real_vfr_clip(vfr_clip: str) -> None:
    spec = SamplingSpec("qwen", fps=8.0, min_frames=4, max_frames=32, seed=0)
    dec = build_decoder(DecoderConfig(name="pyav_cpu", num_threads=1, timeout_s=30.0))
    clip = dec.decode(vfr_clip, partial(sample_timestamps, spec, 0, 0))
    expected = qwen_vl_utils_indices(30, 30 / VFR_DURATION, fps=8.0, min_frames=4, max_frames=32)
    assert [V.frame_index_of(f) for f in clip.frames.cpu().numpy()] == expected
