"""``ModelConfig``: the video-language model's shape.

``tokens_per_frame`` and ``max_text_len`` live here so the compose-time token budget
(``max_frames * tokens_per_frame + max_text_len <= max_seq_len``) is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvideo.config.checks import require_choice, require_positive, require_range

VISION_BACKBONES = ("vit", "timm")


@dataclass
class ModelConfig:
    """Vision encoder -> adapter -> causal LM.

    vision_backbone: ``vit`` (built in, trained from scratch) or ``timm`` (needs
        ``timm_model`` and a local ``timm_weights`` file; nothing is downloaded).
    patch_size / vision_width / vision_depth / vision_heads: the per-frame ViT.
    tokens_per_frame: visual tokens each frame is pooled to (a square number, pooled
        from the patch grid as a k x k grid).
    lm_width / lm_depth / lm_heads: the causal decoder over ``[visual | text]``.
    max_seq_len: hard cap on the LM sequence (positions table size).
    max_text_len: text tokens per sample (prompt + caption + EOS), padded/truncated.
    """

    name: str = "tiny_vlm"
    vision_backbone: str = "vit"
    timm_model: str = ""
    timm_weights: str = ""
    patch_size: int = 16
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

    def __post_init__(self) -> None:
        require_choice("model.vision_backbone", self.vision_backbone, VISION_BACKBONES)
        if self.vision_backbone == "timm" and not (self.timm_model and self.timm_weights):
            raise ValueError(
                "model.timm_model and model.timm_weights must both be set when "
                "model.vision_backbone=timm (weights are loaded from a local file, never downloaded)"
            )
        for field in ("patch_size", "vision_width", "vision_depth", "vision_heads",
                      "tokens_per_frame", "lm_width", "lm_depth", "lm_heads",
                      "max_seq_len", "max_text_len"):
            require_positive(f"model.{field}", getattr(self, field))
        if self.vision_width % self.vision_heads:
            raise ValueError(
                f"model.vision_width ({self.vision_width}) must be divisible by "
                f"model.vision_heads ({self.vision_heads})"
            )
        if self.lm_width % self.lm_heads:
            raise ValueError(
                f"model.lm_width ({self.lm_width}) must be divisible by model.lm_heads ({self.lm_heads})"
            )
        side = math.isqrt(self.tokens_per_frame)
        if side * side != self.tokens_per_frame:
            raise ValueError(
                f"model.tokens_per_frame must be a square number (pooled as a k x k grid; "
                f"got {self.tokens_per_frame})"
            )
        require_range("model.dropout", self.dropout, 0.0, 0.9)
