"""Frames -> the video inputs of Qwen2-VL and Qwen2.5-VL: ``pixel_values_videos`` and
``video_grid_thw``, the last step of transformers' ``Qwen2VLVideoProcessor``.

Why kvideo does this step itself: the processor's module imports torchvision at the top, and the
torchvision wheel on PyPI for this torch is a CUDA build that does not load against a CPU torch,
so on a CPU machine the processor cannot even be imported. The steps before this one are
kvideo's already: sampling (``video/sampling``), decoding and the model's own resize rule
(``smart_resize``, applied once in the decoder: ``video.resize=max_pixels``, or a ``frame_size``
square that is a multiple of the merged patch), and normalization with the folder's
``image_mean`` / ``image_std`` (``kvideo.data.preprocess``). What is left is this patch layout,
a reshape: a clip's frames are grouped ``temporal_patch_size`` at a time (the last frame
repeated to fill the last group), cut into ``patch_size`` squares, and ordered so that each
``merge_size`` x ``merge_size`` block of patches is contiguous (the merger joins them into one
LM token).

``tests/unit/test_video_patches.py`` checks it against the processor's own ``patchify`` and
against the image processor, which loads without torchvision; the prepared GPU check compares
the whole route with ``AutoProcessor`` where torchvision works.
"""

from __future__ import annotations

import torch
from torch import Tensor


def qwen_video_patches(
    clip: Tensor, *, patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[Tensor, tuple[int, int, int]]:
    """``clip`` (T, C, H, W), normalized, sides multiples of ``patch_size * merge_size`` ->
    ``(patches (grid_t * grid_h * grid_w, C * temporal_patch_size * patch_size^2), (grid_t, grid_h,
    grid_w))``."""
    frames, channels, height, width = clip.shape
    if pad := -frames % temporal_patch_size:
        clip = torch.cat([clip, clip[-1:].expand(pad, -1, -1, -1)])
    grid_t = clip.shape[0] // temporal_patch_size
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = clip.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    ).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return flat, (grid_t, grid_h, grid_w)


def seconds_per_group(times: Tensor, temporal_patch_size: int) -> float:
    """The display time one temporal patch spans (Qwen2.5-VL's ``second_per_grid_ts``), from the
    frames' real display times: their mean spacing times the group size. The processor computes
    ``temporal_patch_size / fps`` from the fps it was told; kvideo's sampled times are the truth
    that fps stands for (a 1-frame clip has one group, whose span never enters a position)."""
    if times.numel() < 2:
        return float(temporal_patch_size)
    spacing = float(times[-1] - times[0]) / (times.numel() - 1)
    return spacing * temporal_patch_size if spacing > 0 else float(temporal_patch_size)


def group_times(times: Tensor, temporal_patch_size: int, groups: int) -> list[float]:
    """Each temporal patch's time (Qwen3-VL's timestamps): the mean display time of its first and
    last frame, the last frame repeated to fill the last patch as its pixels are. The processor
    computes them from frame indices and the fps it was told; these are the decoded frames' own
    times. A clip without frames has one patch at 0."""
    values = times.tolist() or [0.0]
    values += [values[-1]] * (groups * temporal_patch_size - len(values))
    return [
        (values[g * temporal_patch_size] + values[(g + 1) * temporal_patch_size - 1]) / 2
        for g in range(groups)
    ]
