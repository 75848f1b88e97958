"""What size decoded frames come out at (``video.resize``), as a rule of the source's size.

* ``square`` (the seed's behaviour, default): every frame is resized to ``frame_size`` x
  ``frame_size`` whatever its aspect ratio (a 16:9 clip is squashed).
* ``keep_aspect``: the long side is scaled to ``frame_size`` and the short side keeps the ratio
  (rounded, at least 1 px); the dataset pads the picture to the ``frame_size`` square, centred, with
  the vision tower's mean colour (LLaVA's ``pad`` mode), and records where it is
  (``frame_region``) so the models pool only the picture's patches.
* ``max_pixels`` (Qwen2-VL's dynamic resolution, for ``model=hf_vlm``): the aspect ratio is kept,
  both sides are multiples of ``factor`` (the patch size times the pooling stride, Qwen's 14 x 2),
  and the area is at most ``max_pixels``: ``qwen_smart_resize``, whose floor can still leave a
  very elongated frame over the bound when its short side is clamped up to one ``factor``; the
  long side is then shortened to fit, so the bound always holds. Clips of different shapes give
  different numbers of visual tokens.

Torch-free: decoders and config checks import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RESIZE_MODES = ("square", "keep_aspect", "max_pixels")
# qwen-vl-utils refuses frames more elongated than this (MAX_RATIO).
MAX_ASPECT_RATIO = 200


def qwen_smart_resize(
    height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """``(height, width)`` by qwen-vl-utils' ``smart_resize`` rule: sides rounded to multiples of
    ``factor`` (at least one), then scaled down (floor) to fit ``max_pixels`` or up (ceil) to reach
    ``min_pixels``, keeping the ratio as closely as the grid allows.

    Written here rather than imported: transformers' copy lives in a module that needs
    torchvision, which kvideo does not install (it would pull a CUDA torch).
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.0f} is over {MAX_ASPECT_RATIO} "
            f"({width}x{height})"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Resize:
    """The rule of ``video.resize`` (see the module docstring).

    mode: one of ``RESIZE_MODES``.
    frame_size: the square's side (``square``, ``keep_aspect``).
    max_pixels: the area bound of ``max_pixels`` (``video.max_pixels``, 0 = ``frame_size^2``).
    factor: what ``max_pixels`` sides are multiples of.
    """

    mode: str = "square"
    frame_size: int = 224
    max_pixels: int = 0
    factor: int = 1

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES} (got {self.mode!r})")

    @property
    def pixel_budget(self) -> int:
        """The most pixels a ``max_pixels`` frame may have."""
        return self.max_pixels or self.frame_size * self.frame_size

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """``(height, width)`` a ``width`` x ``height`` source frame is resized to."""
        side = self.frame_size
        if self.mode == "square":
            return side, side
        if self.mode == "keep_aspect":
            scale = side / max(width, height)
            return max(1, min(side, round(height * scale))), max(1, min(side, round(width * scale)))
        h, w = qwen_smart_resize(
            height,
            width,
            factor=self.factor,
            min_pixels=self.factor * self.factor,
            max_pixels=self.pixel_budget,
        )
        if h * w > self.pixel_budget:  # a side clamped up to one factor: shorten the other to fit
            if h <= w:
                w = max(self.factor, self.pixel_budget // h // self.factor * self.factor)
            else:
                h = max(self.factor, self.pixel_budget // w // self.factor * self.factor)
        return h, w


def as_resize(size: int | Resize | None) -> Resize | None:
    """A decoder's ``size`` argument as a rule: an int is a square of that side, None native size."""
    if size is None or isinstance(size, Resize):
        return size
    return Resize("square", int(size))
