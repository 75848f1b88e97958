"""``ModelConfig``: the video-language model's shape.

``tokens_per_frame`` and ``max_text_len`` live here so the compose-time token budget
(``max_frames * tokens_per_frame + max_text_len <= max_seq_len``) is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvideo.config.checks import require_at_most, require_choice, require_positive, require_range

VISION_BACKBONES = ("vit", "timm")
PATCH_STEMS = ("linear", "conv")

# Generous but finite upper bounds: a typo (an extra zero or two) fails here in one line instead
# of in the allocator. Each reason is part of the message.
_WIDEST = "16384 is the width of the widest published LM (Llama 3.1 405B)"
_DEEPEST = "deeper than any published transformer (GPT-3: 96 blocks, Llama 3.1 405B: 126)"
BOUNDS = {
    # one block 16384 wide is 12 * 16384^2 = 3.2 G parameters = 48 GiB of fp32 weights, grads, Adam
    "vision_width": (16384, _WIDEST),
    "lm_width": (16384, _WIDEST),
    "vision_depth": (256, _DEEPEST),
    "lm_depth": (256, _DEEPEST),
    # the learned table is max_seq_len * lm_width floats: 1e8 positions at width 128 is 48 GiB
    # of weights alone (191 GiB with grads and Adam states)
    "max_seq_len": (
        131072,
        "131072 (128K) positions is the longest context of common LMs; the "
        "position table is model.max_seq_len * model.lm_width floats",
    ),
}


@dataclass
class ModelConfig:
    """Vision encoder -> adapter -> causal LM.

    vision_backbone: ``vit`` (built in, trained from scratch) or ``timm`` (needs
        ``timm_model`` and a local ``timm_weights`` file; nothing is downloaded).
    patch_size / vision_width / vision_depth / vision_heads: the per-frame ViT.
    patch_stem: ``linear`` (one strided projection, the classic ViT) or ``conv`` (stride-2
        3x3 convolutions down to the patch grid; learns shapes far faster from scratch).
    tokens_per_frame: visual tokens each frame is pooled to (a square number, pooled
        from the patch grid as a k x k grid).
    lm_width / lm_depth / lm_heads: the causal decoder over ``[visual | text]``.
    max_seq_len: hard cap on the LM sequence (positions table size).
    max_text_len: text tokens per sample (prompt + caption + EOS), padded/truncated.
    motion_tokens: add each visual token's feature change since the previous frame
        (TSN-style difference features), so motion is a local cue for the LM.
    """

    name: str = "tiny_vlm"
    vision_backbone: str = "vit"
    timm_model: str = ""
    timm_weights: str = ""
    patch_size: int = 16
    patch_stem: str = "linear"
    vision_width: int = 128
    vision_depth: int = 2
    vision_heads: int = 4
    tokens_per_frame: int = 4
    lm_width: int = 128
    lm_depth: int = 2
    lm_heads: int = 4
    max_seq_len: int = 256
    max_text_len: int = 48
    dropout: float = 0.0
    motion_tokens: bool = False

    def __post_init__(self) -> None:
        require_choice("model.vision_backbone", self.vision_backbone, VISION_BACKBONES)
        require_choice("model.patch_stem", self.patch_stem, PATCH_STEMS)
        if self.vision_backbone == "timm" and not (self.timm_model and self.timm_weights):
            raise ValueError(
                "model.timm_model and model.timm_weights must both be set when "
                "model.vision_backbone=timm (weights are loaded from a local file, never downloaded)"
            )
        for field in (
            "patch_size",
            "vision_width",
            "vision_depth",
            "vision_heads",
            "tokens_per_frame",
            "lm_width",
            "lm_depth",
            "lm_heads",
            "max_seq_len",
            "max_text_len",
        ):
            require_positive(f"model.{field}", getattr(self, field))
        for field, (limit, why) in BOUNDS.items():
            require_at_most(f"model.{field}", getattr(self, field), limit, why)
        if self.vision_width % self.vision_heads:
            raise ValueError(
                f"model.vision_width ({self.vision_width}) must be divisible by "
                f"model.vision_heads ({self.vision_heads})"
            )
        if self.lm_width % self.lm_heads:
            raise ValueError(
                f"model.lm_width ({self.lm_width}) must be divisible by model.lm_heads ({self.lm_heads})"
            )
        if self.patch_stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(
                f"model.patch_size must be a power of two with model.patch_stem=conv (got {self.patch_size})"
            )
        side = math.isqrt(self.tokens_per_frame)
        if side * side != self.tokens_per_frame:
            raise ValueError(
                f"model.tokens_per_frame must be a square number (pooled as a k x k grid; "
                f"got {self.tokens_per_frame})"
            )
        require_range("model.dropout", self.dropout, 0.0, 0.9)
