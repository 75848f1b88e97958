"""``model=pretrained`` against the video settings, before any work: the folder holds a VLM that
``model=pretrained`` finetunes, its weights load without unpickling (unless allowed), frames are
sized by the model's own rule (Qwen's grid, or LLaVA-OneVision's and SmolVLM2's one size), and the visual plus
text tokens fit its context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvideo.config.checks import visuals_factor
from kvideo.hf_folders import (
    VideoVlmGeometry,
    image_statistics,
    pickled_weights_only,
    resolve_model_folder,
    video_vlm_geometry,
)
from kvideo.preflight.frames import frame_resize

if TYPE_CHECKING:
    from kvideo.config.model import ModelConfig
    from kvideo.config.root import KVideoConfig

# The tokens the template adds around a clip (Qwen3-VL: around each temporal patch):
# <|vision_start|> and <|vision_end|>; and a bound on the tokens of Qwen3-VL's "<12.5 seconds>".
VIDEO_MARKERS = 2
TIMESTAMP_TOKENS = 8
# SmolVLM2 (bounds): a frame's "\nFrame from 00:12:" and its three image markers, and the
# clip's introduction ("You are provided the following series of ... video.\n", "\n\n").
FRAME_TEXT_TOKENS = 16
INTRODUCTION_TOKENS = 40


def check_pretrained_model(cfg: KVideoConfig) -> None:
    """Raises ``ValueError`` naming the key to change (see the module docstring)."""
    video, model = cfg.video, cfg.model
    folder = resolve_model_folder("model.path", model.path)
    geometry = video_vlm_geometry("model.path", folder)
    image_statistics("model.path", folder)
    pickled = pickled_weights_only(folder)
    if pickled and not model.allow_pickled_weights:
        raise ValueError(
            f"model.path: {folder} has only pickled weights ({', '.join(pickled[:3])}), and loading them "
            "can run code from the file; convert them to safetensors, or set "
            "model.allow_pickled_weights=true if you trust the folder"
        )
    if geometry.image_size:
        check_fixed_frame_size(cfg, geometry)
        return
    if video.resize == "square" and video.frame_size % geometry.factor:
        fits = (video.frame_size // geometry.factor or 1) * geometry.factor
        raise ValueError(
            f"video.frame_size ({video.frame_size}) must be a multiple of {geometry.factor} for this "
            f"{geometry.model_type} (patch_size {geometry.patch_size} * spatial_merge_size "
            f"{geometry.merge_size}); set video.frame_size={fits}, or video.resize=max_pixels"
        )
    area = frame_resize(video, model).pixel_budget if video.resize == "max_pixels" else video.frame_size**2
    groups = -(-video.max_frames // geometry.temporal_patch_size)
    visual = groups * (area // geometry.factor**2)
    markers = VIDEO_MARKERS
    if geometry.timestamps_as_text:
        markers = groups * (VIDEO_MARKERS + TIMESTAMP_TOKENS)
    visuals = cfg.data.max_visuals
    total = visuals * (visual + markers) + model.max_text_len
    context, context_name = smaller_context(geometry, model)
    if total > context:
        formula, numbers = per_record(
            visuals,
            f"ceil(video.max_frames / temporal_patch_size) * pixels / {geometry.factor}^2 + markers",
            f"ceil({video.max_frames} / {geometry.temporal_patch_size}) * {area} / {geometry.factor}^2 "
            f"+ {markers}",
        )
        raise ValueError(
            f"token budget exceeded: {formula} + model.max_text_len = {numbers} + {model.max_text_len} "
            f"= {total} > {context_name} ({context}); lower video.max_frames, video.frame_size / "
            "video.max_pixels, data.max_visuals or model.max_text_len"
        )


def check_fixed_frame_size(cfg: KVideoConfig, geometry: VideoVlmGeometry) -> None:
    """LLaVA-OneVision's, LLaVA-NeXT-Video's, SmolVLM2's and InternVL3's frames are squares of the
    tower's ``image_size``, each ``tokens_per_frame`` tokens; LLaVA-OneVision adds one newline
    token after the clip, SmolVLM2 and InternVL3 text around each frame (bounded by SmolVLM2's,
    the longer: its introduction too)."""
    video, model = cfg.video, cfg.model
    if video.resize != "square" or video.frame_size != geometry.image_size:
        raise ValueError(
            f"video.frame_size ({video.frame_size}, video.resize={video.resize}) must be the "
            f"{geometry.model_type} tower's image_size ({geometry.image_size}, a square): set "
            f"video.frame_size={geometry.image_size} video.resize=square"
        )
    per_frame, per_clip = geometry.tokens_per_frame, geometry.tokens_after_clip
    if geometry.frames_as_images:
        per_frame, per_clip = per_frame + FRAME_TEXT_TOKENS, INTRODUCTION_TOKENS
    visuals = cfg.data.max_visuals
    total = visuals * (video.max_frames * per_frame + per_clip) + model.max_text_len
    context, context_name = smaller_context(geometry, model)
    if total > context:
        formula, numbers = per_record(
            visuals,
            "video.max_frames * tokens per frame + tokens per clip",
            f"{video.max_frames} * {per_frame} + {per_clip}",
        )
        raise ValueError(
            f"token budget exceeded: {formula} + model.max_text_len = {numbers} + {model.max_text_len} "
            f"= {total} > {context_name} ({context}); lower video.max_frames, data.max_visuals or "
            "model.max_text_len"
        )


def per_record(visuals: int, formula: str, numbers: str) -> tuple[str, str]:
    """A clip's tokens as a formula and in numbers, times ``data.max_visuals`` when above 1."""
    by_name, in_numbers = visuals_factor(visuals)
    if not by_name:
        return formula, numbers
    return f"{by_name}({formula})", f"{in_numbers}({numbers})"


def smaller_context(geometry: VideoVlmGeometry, model: ModelConfig) -> tuple[int, str]:
    """``(tokens, name)`` of the tighter bound on the sequence: the model's positions or
    ``model.max_seq_len``."""
    return min(
        (geometry.context, "the model's max_position_embeddings"), (model.max_seq_len, "model.max_seq_len")
    )
