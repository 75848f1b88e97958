"""decord's frame-width bug: the alignment rule, and decoding at every width on this CPU.

decord fails to copy out frames at some widths, and which ones depends on the CPU's SIMD
alignment. ``kvideo.decode.decord_widths`` states the rule; these tests check it against
the two lists measured on AVX2 and AVX-512 machines, against the installed decord on
whatever CPU runs the suite, and that ``decord_cpu`` returns frames at every native width
and every requested size 1..256 anyway.
"""

from __future__ import annotations

import decord
import numpy as np
import pytest

from kvideo.decode import decode_at
from kvideo.decode.decord_widths import SIMD_ALIGNMENTS, decord_can_emit_width, fails_at_alignment
from tests.helpers import videos as V

WIDTHS = range(1, 257)

# Measured with decord2 3.4.0 (``DECORDArrayCopyFromTo ... size must exactly match``).
MEASURED_AVX2 = [1, 2, 3, 4, 6, 8, 12, 16, 24, 48, 72]
MEASURED_AVX512 = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96, 144]


def test_alignment_rule_reproduces_both_measured_cpus() -> None:
    assert [w for w in WIDTHS if fails_at_alignment(w, 32)] == MEASURED_AVX2
    assert [w for w in WIDTHS if fails_at_alignment(w, 64)] == MEASURED_AVX512
    refused = [w for w in WIDTHS if not decord_can_emit_width(w)]
    assert set(MEASURED_AVX2) | set(MEASURED_AVX512) <= set(refused)
    assert all(decord_can_emit_width(w) for w in range(64, 4097, 64))  # compact everywhere
    assert SIMD_ALIGNMENTS == (16, 32, 64)


@pytest.fixture(scope="module")
def narrow_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """A 3-frame clip at every width 1..256, 16 px high (yuv444p takes any size); ~1 s."""
    d = tmp_path_factory.mktemp("widths")
    return {
        w: V.make_odd_size(d / f"w{w}.mp4", seconds=0.12, fps=25, width=w, height=16, gop=2) for w in WIDTHS
    }


def _decord_fails(path: str) -> bool:
    try:
        vr = decord.VideoReader(path)
        vr.get_batch([0])
    except Exception:
        return True
    return False


def test_this_cpus_failures_are_ones_the_rule_refuses(narrow_clips) -> None:
    """The installed decord on this CPU: every width it fails at is one kvideo never asks
    decord for, so the rule covers the machine the suite runs on."""
    failing = [w for w, path in narrow_clips.items() if _decord_fails(path)]
    assert failing, "decord fails at no width here: the rule's premise changed"
    assert [w for w in failing if decord_can_emit_width(w)] == []
    assert any(failing == [w for w in WIDTHS if fails_at_alignment(w, a)] for a in SIMD_ALIGNMENTS)


def test_every_native_width_decodes_exactly(narrow_clips) -> None:
    stamps = [0.0, 0.05, 0.1]
    for w, path in narrow_clips.items():
        clip = decode_at(path, stamps)
        ref, ref_times = V.pyav_at(path, stamps)
        assert tuple(clip.frames.shape) == (3, 16, w, 3), w
        assert clip.times == pytest.approx(ref_times, abs=1e-6), w
        assert np.array_equal(clip.frames.numpy(), ref), f"width {w}: frames differ from PyAV"


@pytest.mark.parametrize("native", [32, 96, 160])
def test_every_requested_size_decodes(tmp_path, native) -> None:
    path = V.make_h264(tmp_path / "clip.mp4", seconds=0.4, fps=25, width=native, height=native, gop=5)
    for size in WIDTHS:
        clip = decode_at(path, [0.0, 0.2], size=size)
        assert tuple(clip.frames.shape) == (2, size, size, 3), size
        if size >= 16:  # the frame-index bands survive scaling from here on
            assert [V.frame_index_of(f) for f in clip.frames.numpy()] == [0, 5], size
