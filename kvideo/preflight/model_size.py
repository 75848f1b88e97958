"""Parameter counts of the built-in models, from their config alone (no torch, no model built).

Why: the memory estimate (``kvideo.preflight.memory``) runs at compose time, where building a
model to count it would cost seconds and import torch. Each function states the layer sums
of the module it mirrors; ``tests/unit/test_memory_estimate.py`` compares ``estimate_params``
with ``sum(p.numel())`` of the real ``build_model`` for several configs.
"""

from __future__ import annotations

import math

from kvideo.config.model import ModelConfig


def block_params(width: int) -> int:
    """``kvideo.model.lm.Block``: 2 LayerNorms (4w), qkv (3w^2 + 3w), proj (w^2 + w),
    fc1 (4w^2 + 4w), fc2 (4w^2 + w) = 12w^2 + 13w."""
    return 12 * width * width + 13 * width


def conv_stem_channels(patch_size: int, width: int) -> list[int]:
    """Output channels of ``kvideo.model.vision.conv_stem``'s stride-2 stages (then a 1x1 to
    ``width``): log2(patch_size) stages, doubling up to ``width``, at least 16."""
    stages = int(math.log2(patch_size))
    return [max(16, width >> (stages - 1 - i)) for i in range(stages)]


def patch_embed_params(model: ModelConfig) -> int:
    """Linear stem: one ``patch x patch`` conv 3 -> width. Conv stem: 3x3 convs with bias and a
    GroupNorm (2 per channel) per stage, then a 1x1 conv to the width."""
    p, w = model.patch_size, model.vision_width
    if model.patch_stem != "conv":
        return 3 * p * p * w + w
    total, channels = 0, 3
    for out in conv_stem_channels(p, w):
        total += channels * out * 9 + out + 2 * out
        channels = out
    return total + channels * w + w


def vision_params(model: ModelConfig, frame_size: int) -> int:
    """Built-in ViT: patch embedding, a position per patch, the blocks, the final LayerNorm.
    A timm backbone is unknown without building it: 0, which keeps the estimate a lower bound."""
    if model.vision_backbone != "vit":
        return 0
    w, grid = model.vision_width, frame_size // model.patch_size
    return patch_embed_params(model) + grid * grid * w + model.vision_depth * block_params(w) + 2 * w


def projector_params(model: ModelConfig, max_frames: int) -> int:
    """``FrameProjector``: LayerNorm on the vision width, a 2-layer MLP to the LM width (twice
    with motion tokens), frame- and token-position tables (timm: its width counted as 0)."""
    c = model.vision_width if model.vision_backbone == "vit" else 0
    d = model.lm_width
    mlp = c * d + d + d * d + d
    return 2 * c + mlp * (2 if model.motion_tokens else 1) + (max_frames + model.tokens_per_frame) * d


def lm_params(model: ModelConfig, vocab_size: int, tie_embeddings: bool = True) -> int:
    """``CausalLM``: token embedding (the head shares it when tied), position table, blocks,
    final LayerNorm."""
    d = model.lm_width
    embed = vocab_size * d * (1 if tie_embeddings else 2)
    return embed + model.max_seq_len * d + model.lm_depth * block_params(d) + 2 * d


def estimate_params(
    model_cfg: ModelConfig, vocab_size: int, max_frames: int, frame_size: int, *, tie_embeddings: bool = True
) -> int:
    """Parameters of ``build_model(model_cfg, vocab_size=..., max_frames=..., frame_size=...)``,
    counted from the config: the tiny default (64 px, 8 frames, bytes) has 1.05 M."""
    return (
        vision_params(model_cfg, frame_size)
        + projector_params(model_cfg, max_frames)
        + lm_params(model_cfg, vocab_size, tie_embeddings)
    )
