"""Which output widths decord can copy out, on every CPU.

decord converts each frame to RGB with FFmpeg, whose frame buffers pad every row to the
CPU's widest SIMD alignment ``A`` (16 bytes with SSE/NEON, 32 with AVX2, 64 with AVX-512).
An RGB row of width ``w`` is then ``L = 3 * FFALIGN(w, i)`` bytes, for the smallest power
of two ``i`` that makes ``L`` a multiple of ``A``. decord's ``AsNDArray`` treats a frame
whose stride is not ``3 * w`` but happens to be a multiple of ``w`` as a compact frame of
``L / w`` channels, and the copy into its (H, W, 3) array then fails with
``DECORDArrayCopyFromTo ... size must exactly match``.

The rule reproduces what was measured with decord2 3.4.0 exactly: on an AVX2 CPU widths
1-4, 6, 8, 12, 16, 24, 48 and 72 fail; on an AVX-512 CPU 1-4, 6, 8, 12, 16, 24, 32, 48,
96 and 144 (a test sweeps 1..256 against the real library on whatever CPU runs it).

kvideo never asks decord for a width that fails on *any* of the three alignments, not only
on the CPU at hand: then the same config decodes the same pixels on every node of a
cluster, instead of switching resamplers with the CPU a job happens to land on.
"""

from __future__ import annotations

from functools import cache

# Row alignments FFmpeg uses (``av_cpu_max_align``): SSE/NEON, AVX2, AVX-512.
SIMD_ALIGNMENTS = (16, 32, 64)


def rgb_row_stride(width: int, alignment: int) -> int:
    """Bytes per RGB24 row that FFmpeg allocates for ``width`` pixels at ``alignment``."""
    if width < 1:
        raise ValueError(f"width must be >= 1 (got {width})")
    step = 1
    while (3 * -(-width // step) * step) % alignment:
        step *= 2
    return 3 * -(-width // step) * step


def fails_at_alignment(width: int, alignment: int) -> bool:
    """True when decord misreads a ``width``-pixel RGB frame padded to ``alignment``."""
    stride = rgb_row_stride(width, alignment)
    return stride != 3 * width and stride % width == 0


@cache
def decord_can_emit_width(width: int) -> bool:
    """True when decord returns ``width``-pixel frames on every CPU FFmpeg supports."""
    return not any(fails_at_alignment(width, a) for a in SIMD_ALIGNMENTS)
