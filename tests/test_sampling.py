"""Sampling policies: golden vectors from the peer projects, and properties for all."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kvideo.sampling import timestamps

POLICIES = ("uniform", "molmo2", "qwen", "random_segment")


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


# qwen ---------------------------------------------------------------------------------

def test_qwen_design_example() -> None:
    got = timestamps("qwen", duration=1.0, fps=2, min_frames=4, max_frames=16, num_frames=30, native_fps=30)
    assert got == pytest.approx([0 / 30, 10 / 30, 19 / 30, 29 / 30])


def test_qwen_long_clip_even_count_capped() -> None:
    got = timestamps("qwen", duration=100, fps=2, min_frames=4, max_frames=15, num_frames=3000, native_fps=30)
    assert len(got) == 14  # floor_even(15)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_qwen_never_raises_on_short_clips(num_frames: int) -> None:
    got = timestamps("qwen", duration=num_frames / 30, fps=2, min_frames=8, max_frames=16,
                     num_frames=num_frames, native_fps=30)
    assert 1 <= len(got) <= num_frames


def test_qwen_needs_frame_metadata() -> None:
    with pytest.raises(ValueError, match="num_frames or native_fps"):
        timestamps("qwen", duration=3, fps=2, min_frames=4, max_frames=8)


# random_segment -------------------------------------------------------------------

def test_random_segment_one_stamp_per_segment_and_reproducible() -> None:
    kw = {"duration": 8.0, "fps": 1.0, "min_frames": 4, "max_frames": 8}
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
        got = timestamps(policy, duration=duration, fps=fps, min_frames=lo, max_frames=hi,
                         num_frames=max(1, round(duration * native)), native_fps=native, index=7)
        context = f"{policy} duration={duration} fps={fps} frames=[{lo},{hi}]: {got}"
        assert 1 <= len(got) <= hi, context
        assert got == sorted(got), context
        assert all(0.0 <= t <= duration + 1e-9 for t in got), context
        if policy in ("uniform", "molmo2") and len(got) > 1:
            assert got[0] == 0.0 and got[-1] == pytest.approx(duration), context
        if policy in ("uniform", "molmo2", "random_segment") and duration * fps >= 1:
            assert len(got) >= lo, context


def test_unknown_policy_lists_choices() -> None:
    with pytest.raises(KeyError, match="random_segment"):
        timestamps("nope", duration=1, fps=1, min_frames=1, max_frames=1)
