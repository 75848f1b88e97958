"""SmolVLM2's and InternVL3's visual arguments for a batch of clips (``model=pretrained``): each
frame an image in text (``kvideo.model.video_text``), in their processors' layouts after resize and
normalization.

SmolVLM2: ``pixel_values`` (N, F, C, H, W), each clip's valid frames, then all-zero frames up to
the batch's most, which the model drops as padding; a video's text tells its frames' display
times; a picture is its tiles (``kvideo.data.picture_tiles``: its rows and columns, then the
whole) in its image text. InternVL3: ``pixel_values`` (sum of the clips' frames, C, H, W), every
clip's valid frames in batch order, as its processor concatenates them; a picture is its tiles
and thumbnail (``kvideo.data.picture_tiles``) in one image text. A clip without frames keeps its
black one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from kvideo.data.picture_tiles import smolvlm_grid, smolvlm_image_text
from kvideo.hf_folders import VideoVlmGeometry
from kvideo.model.video_inputs import VideoInputs
from kvideo.model.video_text import internvl_image_text, internvl_video_text, smolvlm_video_text


class ImageTextClips(NamedTuple):
    """N clips: (N, F, C, H, W) normalized frames, their (N, F) mask and times, which are
    pictures, and each picture's (height, width) as decoded (SmolVLM2's tiling)."""

    frames: Tensor
    frame_mask: Tensor
    frame_times: Tensor
    pictures: list[bool]
    picture_sizes: list[tuple[int, int]]


def image_text_inputs(
    clips: ImageTextClips, geometry: VideoVlmGeometry, picture_processor: Any = None
) -> VideoInputs:
    """The arguments, each clip's text and each clip's entries; ``picture_processor``: SmolVLM2's
    image processor, whose rule gives a picture's rows and columns."""
    frames, keep = clips.frames, clips.frame_mask.to(torch.bool)
    per_frame = geometry.tokens_per_frame
    valid = [frames[b][keep[b]] if bool(keep[b].any()) else frames[b][:1] for b in range(frames.shape[0])]
    if geometry.model_type == "internvl":
        texts = [
            internvl_image_text(per_frame, len(clip))
            if clips.pictures[b]
            else internvl_video_text(len(clip), per_frame)
            for b, clip in enumerate(valid)
        ]
        counts = [clip.shape[0] for clip in valid]
        return VideoInputs({"pixel_values": torch.cat(valid)}, texts, {"pixel_values": counts})
    most = max(clip.shape[0] for clip in valid)
    pixels = frames.new_zeros(frames.shape[0], most, *frames.shape[2:])
    texts = []
    for b, clip in enumerate(valid):
        pixels[b, : clip.shape[0]] = clip
        if clips.pictures[b]:
            rows, cols = smolvlm_grid(picture_processor, clips.picture_sizes[b], frames.shape[1])
            texts.append(smolvlm_image_text(rows, cols, per_frame))
        else:
            times = clips.frame_times[b][keep[b]].tolist() if bool(keep[b].any()) else [0.0]
            texts.append(smolvlm_video_text(times, per_frame))
    return VideoInputs({"pixel_values": pixels}, texts, {"pixel_values": [1] * len(valid)})
