"""The frame geometry a config asks for: the decoders' resize rule and the visual-token bound.

``video.resize=max_pixels`` keeps the square's pooling: a frame's patch grid is average-pooled by
the stride that takes the ``video.frame_size`` square's grid to ``model.tokens_per_frame`` tokens
(Qwen2-VL merges 2 x 2 patches the same way), so its sides are multiples of ``patch_size * stride``
and a frame of area ``max_pixels`` gives at most ``max_pixels / (patch_size * stride)^2`` tokens:
the bound the compose-time token budget uses. Torch-free (compose time).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from kvideo.resize import Resize

if TYPE_CHECKING:
    from kvideo.config.model import ModelConfig
    from kvideo.config.video import VideoConfig


def patch_geometry(video: VideoConfig, model: ModelConfig) -> tuple[int, int]:
    """``(patch_size, grid side of the frame_size square)`` of the model's vision part."""
    if model.pretrained_parts:
        from kvideo.hf_folders import resolve_model_folder, tower_geometry

        tower = tower_geometry(
            "model.vision_path", resolve_model_folder("model.vision_path", model.vision_path)
        )
        return tower.patch_size, tower.grid
    return model.patch_size, video.frame_size // model.patch_size


def pooling_stride(video: VideoConfig, model: ModelConfig) -> int:
    """Patches per visual token along a side, for ``resize=max_pixels``; a ``ValueError`` saying
    which ``tokens_per_frame`` work when the square's grid does not pool evenly."""
    _, grid = patch_geometry(video, model)
    side = math.isqrt(model.tokens_per_frame)
    if grid % side:
        fits = [d * d for d in range(1, grid + 1) if grid % d == 0]
        raise ValueError(
            f"video.resize=max_pixels pools the patch grid by a whole stride, but the {grid}x{grid} grid "
            f"of a video.frame_size square does not pool to model.tokens_per_frame={model.tokens_per_frame} "
            f"({grid} / {side} is not a whole number); choose model.tokens_per_frame in {fits}"
        )
    return grid // side


def frame_resize(video: VideoConfig, model: ModelConfig) -> Resize:
    """The rule the decoders size frames by (``kvideo.resize``). A released VLM's
    (``model=pretrained``) is its own: sides multiples of its merged patch (Qwen's ``smart_resize``)."""
    if video.resize != "max_pixels":
        return Resize(video.resize, video.frame_size)
    if model.pretrained_model:
        from kvideo.hf_folders import resolve_model_folder, video_vlm_geometry

        geometry = video_vlm_geometry("model.path", resolve_model_folder("model.path", model.path))
        return Resize("max_pixels", video.frame_size, video.max_pixels, geometry.factor)
    patch, _ = patch_geometry(video, model)
    return Resize("max_pixels", video.frame_size, video.max_pixels, patch * pooling_stride(video, model))


def max_tokens_per_frame(video: VideoConfig, model: ModelConfig) -> int:
    """The most visual tokens one frame can give: ``model.tokens_per_frame``, or with
    ``resize=max_pixels`` the pooled grid of the largest allowed frame."""
    if model.pretrained_model:
        from kvideo.hf_folders import resolve_model_folder, video_vlm_geometry

        geometry = video_vlm_geometry("model.path", resolve_model_folder("model.path", model.path))
        if geometry.image_size:
            return geometry.tokens_per_frame
        area = (
            frame_resize(video, model).pixel_budget if video.resize == "max_pixels" else video.frame_size**2
        )
        return max(1, -(-area // (geometry.factor**2 * geometry.temporal_patch_size)))
    if video.resize != "max_pixels":
        return model.tokens_per_frame
    factor = frame_resize(video, model).factor
    return max(1, frame_resize(video, model).pixel_budget // (factor * factor))


def padded_tokens(video: VideoConfig, model: ModelConfig, visuals: int = 1) -> int:
    """The most tokens one sample can bring, which is what a padded sample costs: ``visuals``
    clips (``data.max_visuals``) of ``video.max_frames`` frames of ``max_tokens_per_frame`` visual
    tokens, then ``model.max_text_len`` text tokens."""
    return visuals * max_visual_tokens(video, model) + model.max_text_len


def max_visual_tokens(video: VideoConfig, model: ModelConfig) -> int:
    """The most visual tokens one clip can give: ``video.max_frames`` times ``max_tokens_per_frame``."""
    return video.max_frames * max_tokens_per_frame(video, model)
