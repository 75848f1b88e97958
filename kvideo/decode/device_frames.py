"""Frames resized where they are (a GPU decoder's on the GPU), to the size ``video.resize`` gives.

The CPU decoders resize with FFmpeg's bicubic scaler inside the decode; a GPU decoder returns
native-size frames on the device, and this resizes them there with torch's bicubic filter,
antialiased when it shrinks (as the scaler's filter widens), rounded back to uint8. The two
filters differ by a few levels per pixel: the GPU check reports by how much.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resized(frames: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) uint8 for ``size`` (height, width); None or
    the frames' own size returns them as they are."""
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    shrinks = size[0] < frames.shape[1] or size[1] < frames.shape[2]
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrinks)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
