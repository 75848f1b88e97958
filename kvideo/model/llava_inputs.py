"""LLaVA-OneVision's and LLaVA-NeXT-Video's visual arguments for a batch of clips
(``model=pretrained``), each clip a video or a picture.

A video goes in as ``pixel_values_videos`` (N, F, C, H, W), its processors' layout after resize and
normalization, and ``<video>`` once per pooled token of each frame (plus once for
LLaVA-OneVision's newline after the clip). The model takes one frame count per batch, so a clip
with fewer valid frames than the batch's most repeats its last one (as Qwen's processor fills a
temporal patch); one without any is black.

A picture takes the image route, as these models' processors give a picture: its tiles
(``kvideo.data.picture_tiles``: the whole first, then its ``anyres`` grid) as ``pixel_values``
(N, T, C, H, W), zero tiles after a picture's own up to the batch's most (the processors' batch
padding; the model reads a picture's tile count from its size), its size as ``image_sizes``, and
one ``<image>`` per feature the model makes of it. That count is the model's own: its
``pack_image_features`` run on zero features of the tiles' shape, one channel wide (unpadding,
newlines and LLaVA-OneVision's ``anyres_max`` downscaling included), so the placeholders always
match what the model puts in them. LLaVA-OneVision's pictures of a record of several take one tile
each, which it reads through ``batch_num_images``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import torch
from torch import Tensor

from kvideo.hf_folders import VideoVlmGeometry
from kvideo.model.video_inputs import VideoInputs


class LlavaClips(NamedTuple):
    """N clips as the model reads them: (N, F, C, H, W) normalized frames (a picture's: its
    tiles), their (N, F) mask, which are pictures, each picture's (height, width) as decoded, and
    each clip's batch row (a record's pictures share one)."""

    frames: Tensor
    frame_mask: Tensor
    pictures: list[bool]
    picture_sizes: list[tuple[int, int]]
    rows: list[int]


def llava_inputs(clips: LlavaClips, geometry: VideoVlmGeometry, model: Any) -> VideoInputs:
    """The arguments, each clip's ids in the text and each clip's entries per argument;
    ``model``: the transformers model that owns ``pack_image_features``."""
    config = model.config
    keep = clips.frame_mask.to(torch.bool)
    valid = [
        clips.frames[b][keep[b]] if bool(keep[b].any()) else torch.zeros_like(clips.frames[b][:1])
        for b in range(clips.frames.shape[0])
    ]
    videos = [b for b, picture in enumerate(clips.pictures) if not picture]
    pictures = [b for b, picture in enumerate(clips.pictures) if picture]
    kwargs: dict[str, Tensor] = {}
    entries: dict[str, list[int]] = {}
    blocks: list[list[int]] = [[] for _ in valid]
    if videos:
        most = max(valid[b].shape[0] for b in videos)
        stacked = [
            torch.cat([valid[b], valid[b][-1:].expand(most - valid[b].shape[0], -1, -1, -1)]) for b in videos
        ]
        kwargs["pixel_values_videos"] = torch.stack(stacked)
        entries["pixel_values_videos"] = [int(not picture) for picture in clips.pictures]
        for b in videos:
            blocks[b] = [config.video_token_id] * (
                most * geometry.tokens_per_frame + geometry.tokens_after_clip
            )
    if pictures:
        most = max(valid[b].shape[0] for b in pictures)
        tiles = clips.frames.new_zeros(len(pictures), most, *clips.frames.shape[2:])
        for i, b in enumerate(pictures):
            tiles[i, : valid[b].shape[0]] = valid[b]
        kwargs["pixel_values"] = tiles
        kwargs["image_sizes"] = torch.tensor([clips.picture_sizes[b] for b in pictures], device=tiles.device)
        entries["pixel_values"] = entries["image_sizes"] = [int(picture) for picture in clips.pictures]
        grid = geometry.image_size // geometry.patch_size
        for b in pictures:
            count = picture_features(model, valid[b].shape[0], grid, clips.picture_sizes[b])
            blocks[b] = [config.image_token_id] * count
        if geometry.model_type == "llava_onevision":  # a record's count, at its first picture
            first: dict[int, int] = {}  # row -> its first picture
            for b in pictures:
                first.setdefault(clips.rows[b], b)
            counts = Counter(clips.rows[b] for b in pictures)
            kwargs["batch_num_images"] = torch.tensor([counts[row] for row in first], device=tiles.device)
            entries["batch_num_images"] = [int(b in first.values()) for b in range(len(valid))]
    return VideoInputs(kwargs, blocks, entries)


def picture_features(model: Any, tiles: int, grid: int, size: tuple[int, int]) -> int:
    """How many features the model makes of a picture of ``tiles`` tiles of ``grid`` x ``grid``
    patches and ``size`` (height, width): its own ``pack_image_features`` on zero features."""
    features = [torch.zeros(tiles, grid * grid, 1)]
    sizes = torch.tensor([size])
    newline = torch.zeros(1)
    if model.config.model_type == "llava_onevision":
        aspect = getattr(model.config, "vision_aspect_ratio", None) or "anyres_max_9"
        _, lengths = model.pack_image_features(
            features, sizes, image_newline=newline, vision_aspect_ratio=aspect
        )
    else:
        _, lengths = model.pack_image_features(features, sizes, "default", image_newline=newline)
    return int(lengths[0])
