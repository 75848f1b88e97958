"""The pretrained parts of ``model=hf_vlm`` against the video settings: the folders exist, and the
tower's grid, its hidden states and the LM's context fit ``video.*`` and ``model.*``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvideo.config.checks import require_token_budget
from kvideo.hf_folders import image_statistics, lm_context_length, resolve_model_folder, tower_geometry
from kvideo.preflight.frames import max_tokens_per_frame

if TYPE_CHECKING:
    from kvideo.config.root import KVideoConfig


def check_pretrained_parts(cfg: KVideoConfig) -> None:
    """Raises ``ValueError`` naming the key to change; the token budget is checked against the
    smaller of ``model.max_seq_len`` and the LM's ``max_position_embeddings``."""
    video, model = cfg.video, cfg.model
    vision = resolve_model_folder("model.vision_path", model.vision_path)
    lm = resolve_model_folder("model.lm_path", model.lm_path)
    tower = tower_geometry("model.vision_path", vision)
    image_statistics("model.vision_path", vision)
    if video.frame_size != tower.image_size:
        raise ValueError(
            f"video.frame_size ({video.frame_size}) must equal the vision tower's image_size "
            f"({tower.image_size}, from model.vision_path's config.json): frames are decoded at the "
            f"size the tower was trained on; set video.frame_size={tower.image_size}"
        )
    if model.tokens_per_frame > tower.grid**2:
        raise ValueError(
            f"model.tokens_per_frame ({model.tokens_per_frame}) cannot exceed the tower's patch grid "
            f"(image_size / patch_size)^2 = ({tower.image_size} / {tower.patch_size})^2 = {tower.grid**2}"
        )
    if not -tower.depth - 1 <= model.vision_feature_layer <= tower.depth:
        raise ValueError(
            f"model.vision_feature_layer ({model.vision_feature_layer}) is outside the tower's "
            f"{tower.depth + 1} hidden states (embeddings + {tower.depth} layers)"
        )
    positions = lm_context_length("model.lm_path", lm)
    context, context_name = (
        (positions, "the LM's max_position_embeddings")
        if positions < model.max_seq_len
        else (model.max_seq_len, "model.max_seq_len")
    )
    per_frame_name = (
        "model.tokens_per_frame"
        if video.resize != "max_pixels"
        else "(most tokens of a video.max_pixels frame)"
    )
    require_token_budget(
        video.max_frames,
        max_tokens_per_frame(video, model),
        model.max_text_len,
        context,
        per_frame_name=per_frame_name,
        context_name=context_name,
        visuals=cfg.data.max_visuals,
    )
