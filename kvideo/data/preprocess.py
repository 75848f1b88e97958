"""uint8 frames -> normalized float model input, on whatever device the frames are on.

Samples travel between processes as uint8 (4x less to pickle and pin than float), and
normalization runs once per batch on the training device: on the GPU when frames were
decoded there, so no host round trip.
"""

from __future__ import annotations

import torch

# ImageNet statistics: what pretrained (timm) backbones expect; harmless from scratch.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize_frames(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float, normalized per channel."""
    x = frames.to(dtype).movedim(-1, -3).div_(255.0)
    shape = (3, 1, 1)
    mean = torch.tensor(MEAN, dtype=dtype, device=x.device).view(shape)
    std = torch.tensor(STD, dtype=dtype, device=x.device).view(shape)
    return x.sub_(mean).div_(std)
