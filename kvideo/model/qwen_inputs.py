"""Qwen's visual arguments for a batch of clips (``model=pretrained``: Qwen2-VL, Qwen2.5-VL,
Qwen3-VL), each clip a video or a picture.

A video goes in as ``pixel_values_videos`` / ``video_grid_thw`` (Qwen2.5-VL also
``second_per_grid_ts``, the time one temporal patch really spans); a picture takes the image
route, as Qwen's processor gives a picture: its one frame's patches (the frame repeated over a
temporal patch, which is what the image processor does: ``tests/unit/test_video_patches.py``) as
``pixel_values`` / ``image_grid_thw``, and its own placeholder block (``<|image_pad|>``). The model
fills its image and its video placeholders each in reading order, so ``VideoInputs.clip_rows``
gives every clip its entries of both routes (0 in the one it does not take) and packing can
reorder them clip by clip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from kvideo.hf_folders import VideoVlmGeometry
from kvideo.model.video_inputs import VideoInputs
from kvideo.model.video_patches import qwen_video_patches, seconds_per_group

Grid = tuple[int, int, int]
# (route, its pixel argument, its grid argument)
ROUTES = (("video", "pixel_values_videos", "video_grid_thw"), ("image", "pixel_values", "image_grid_thw"))


class QwenClips(NamedTuple):
    """A batch of N clips as the model reads them: (N, F, C, H, W) normalized frames, their
    (N, F) mask and times, (N, 4) picture regions (``video.resize=max_pixels``; None = whole),
    and which clips are pictures (None = none)."""

    frames: Tensor
    frame_mask: Tensor
    frame_times: Tensor
    frame_region: Tensor | None
    pictures: list[bool] | None


def qwen_inputs(
    clips: QwenClips,
    geometry: VideoVlmGeometry,
    video_block: Callable[[Grid, Tensor], list[int]],
    picture_block: Callable[[Grid], list[int]],
) -> VideoInputs:
    """The arguments, each clip's block in the text (``video_block(grid, times)`` /
    ``picture_block(grid)``) and each clip's entries per argument."""
    patches: dict[str, list[Tensor]] = {"video": [], "image": []}
    grids: dict[str, list[Grid]] = {"video": [], "image": []}
    spans: list[float] = []
    blocks: list[list[int]] = []
    entries: dict[str, list[int]] = {name: [] for _, pixels, grid in ROUTES for name in (pixels, grid)}
    for b in range(clips.frames.shape[0]):
        keep = clips.frame_mask[b].to(torch.bool)
        clip = clips.frames[b][keep] if bool(keep.any()) else torch.zeros_like(clips.frames[b][:1])
        if clips.frame_region is not None:
            top, left, h, w = (int(v) for v in clips.frame_region[b])
            clip = clip[..., top : top + h, left : left + w]
        picture = bool(clips.pictures and clips.pictures[b])
        flat, grid = qwen_video_patches(
            clip[:1] if picture else clip,
            patch_size=geometry.patch_size,
            merge_size=geometry.merge_size,
            temporal_patch_size=geometry.temporal_patch_size,
        )
        route = "image" if picture else "video"
        patches[route].append(flat)
        grids[route].append(grid)
        for name, pixels, grid_name in ROUTES:
            entries[pixels].append(flat.shape[0] if name == route else 0)
            entries[grid_name].append(int(name == route))
        if picture:
            blocks.append(picture_block(grid))
        else:
            spans.append(seconds_per_group(clips.frame_times[b][keep], geometry.temporal_patch_size))
            blocks.append(video_block(grid, clips.frame_times[b][keep]))
    device = clips.frames.device
    kwargs: dict[str, Tensor] = {}
    for route, pixels, grid_name in ROUTES:
        if grids[route]:
            kwargs[pixels] = torch.cat(patches[route])
            kwargs[grid_name] = torch.tensor(grids[route], dtype=torch.long, device=device)
    if spans and geometry.model_type == "qwen2_5_vl":
        kwargs["second_per_grid_ts"] = torch.tensor(spans, device=device)
        entries["second_per_grid_ts"] = entries["video_grid_thw"]
    return VideoInputs(kwargs, blocks, {name: entries[name] for name in kwargs})
