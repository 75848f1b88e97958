"""Where the picture is in a padded frame (``video.resize``), as the models need it.

A batch's ``frame_region`` (B, 4) long is ``(top, left, height, width)`` of each clip's picture in
its frames, in pixels (every frame of a clip has the same shape): the rest is padding, either the
``keep_aspect`` square's bars or, with ``max_pixels``, what the batch's collate added to reach
its largest clip.
"""

from __future__ import annotations

import torch
from torch import Tensor


def patch_coverage(frame_region: Tensor, canvas: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """(B, gh, gw) float: the share of each patch of a ``canvas`` (H, W) frame cut into a
    ``grid`` (gh, gw) that lies inside the clip's picture (1 inside, 0 in the padding, between on
    the picture's edge)."""
    (height, width), (rows, cols) = canvas, grid
    region = frame_region.to(torch.long)
    top, left, h, w = (region[:, i : i + 1] for i in range(4))
    y = torch.arange(height, device=region.device)[None]
    x = torch.arange(width, device=region.device)[None]
    inside_rows = ((y >= top) & (y < top + h)).float().view(-1, rows, height // rows).mean(-1)
    inside_cols = ((x >= left) & (x < left + w)).float().view(-1, cols, width // cols).mean(-1)
    return inside_rows[:, :, None] * inside_cols[:, None, :]
