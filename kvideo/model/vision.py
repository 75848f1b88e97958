"""Per-frame vision encoders: a small built-in ViT, or an optional local-weights timm model.

Frames are folded into the batch, ``(B, F, 3, H, W) -> (B*F, 3, H, W)``, so the encoder never
knows about time: temporal order is added later by the projector's frame-position embedding.
Both encoders return the patch grid ``(N, gh, gw, C)`` (channels last) and expose
``out_width = C``, which is all the projector needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kvideo.config.model import ModelConfig
from kvideo.model.lm import Block, init_position_table, init_weights, run_blocks


def conv_stem(patch_size: int, width: int) -> nn.Sequential:
    """Stride-2 3x3 convolutions down to the patch grid ("Early convolutions help
    transformers see better", Xiao et al. 2021): local edge and corner detectors that a
    linear patch projection has to learn the slow way, at a few % of the ViT's FLOPs.
    ``patch_size`` must be a power of two; channels double up to ``width``.
    """
    stages = int(math.log2(patch_size))
    if 2**stages != patch_size:
        raise ValueError(f"model.patch_stem=conv needs a power-of-two model.patch_size (got {patch_size})")
    layers: list[nn.Module] = []
    channels = 3
    for i in range(stages):
        out = max(16, width >> (stages - 1 - i))
        conv = nn.Conv2d(channels, out, kernel_size=3, stride=2, padding=1)
        layers += [conv, nn.GroupNorm(1, out), nn.GELU()]
        channels = out
    layers.append(nn.Conv2d(channels, width, kernel_size=1))
    return nn.Sequential(*layers)


class ViTEncoder(nn.Module):
    """A small ViT trained from scratch: patch conv, learned grid positions, pre-norm blocks.

    No class token: the projector pools the patch grid spatially, so a global token would be
    unused parameters (and an unused-parameter error under DDP).
    """

    def __init__(
        self,
        *,
        frame_size: int,
        patch_size: int,
        width: int,
        depth: int,
        heads: int,
        dropout: float = 0.0,
        stem: str = "linear",
    ) -> None:
        super().__init__()
        if frame_size % patch_size:
            raise ValueError(
                f"video.frame_size ({frame_size}) must be a multiple of model.patch_size ({patch_size})"
            )
        self.frame_size = frame_size
        self.patch_size = patch_size
        self.grid = frame_size // patch_size
        self.out_width = width
        self.patch_embed = (
            conv_stem(patch_size, width)
            if stem == "conv"
            else nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, width))
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.apply(init_weights)
        init_position_table(self.pos_embed)

    def forward(self, images: Tensor, patch_keys: Tensor | None = None) -> Tensor:
        """``images`` (N, 3, H, W) normalized floats -> patch features (N, gh, gw, C).

        ``patch_keys`` (N, gh, gw) bool: the patches others may attend to (``keep_aspect``
        padding is not); each patch still attends to itself, so a padding patch stays finite.
        """
        if images.shape[-2:] != (self.frame_size, self.frame_size):
            raise ValueError(
                f"frames are {tuple(images.shape[-2:])} but the ViT's position table was built for "
                f"video.frame_size={self.frame_size}"
            )
        # Match the conv's parameter dtype so fp16/bf16 frames from the GPU preprocess work
        # without autocast too (under autocast the conv itself still runs in low precision).
        x = self.patch_embed(images.to(self.pos_embed.dtype))
        n, c, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embed
        mask = None
        if patch_keys is not None:
            keys = patch_keys.reshape(n, 1, 1, gh * gw).to(torch.bool)
            mask = keys | torch.eye(gh * gw, dtype=torch.bool, device=x.device)
        x = run_blocks(self.blocks, x, mask)
        normed: Tensor = self.norm(x)
        return normed.view(n, gh, gw, c)


def _import_timm() -> Any:
    """Import timm lazily: it is an optional dependency and must not slow down or break imports."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            "model.vision_backbone=timm needs the optional 'timm' package, which is not installed: "
            "pip install timm (or use model.vision_backbone=vit, the built-in ViT)"
        ) from exc
    return timm


def load_local_state_dict(path: str) -> dict[str, Tensor]:
    """Read a local checkpoint (``.safetensors`` or a ``torch.save`` file), never downloading.

    Accepts the common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and strips a DDP
    ``module.`` prefix, so checkpoints saved by most training scripts load as they are.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"model.timm_weights={path!r} is not a file (weights are loaded from a local file, "
            "never downloaded)"
        )
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(
                f"model.timm_weights={path!r} is a .safetensors file: pip install safetensors"
            ) from exc
        state: Any = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


class TimmEncoder(nn.Module):
    """A timm backbone (``num_classes=0``) with weights from a local file, as a patch grid.

    ``forward_features`` gives tokens (N, prefix + gh*gw, C) for ViT-like models (the class /
    register tokens, ``num_prefix_tokens``, are dropped) or a map (N, C, h, w) for CNNs; either
    way the result is reshaped to (N, gh, gw, C). The input size must be the one the timm model
    was built for (ViT position tables are not resampled here).
    """

    def __init__(self, *, model_name: str, weights: str) -> None:
        super().__init__()
        timm = _import_timm()
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0)
        state = load_local_state_dict(weights)
        missing, _unexpected = self.model.load_state_dict(state, strict=False)
        if missing:
            # Unexpected keys are expected (the classifier head removed by num_classes=0);
            # missing ones mean the file does not belong to this architecture.
            raise ValueError(
                f"model.timm_weights={weights!r} does not match model.timm_model={model_name!r}: "
                f"{len(missing)} missing keys, e.g. {missing[:5]}"
            )
        self.out_width = int(self.model.num_features)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))

    def forward(self, images: Tensor, patch_keys: Tensor | None = None) -> Tensor:
        """``images`` (N, 3, H, W) -> (N, gh, gw, C). ``patch_keys`` is not used: timm models take
        no patch mask (padding is the tower's mean colour; the projector pools the picture only)."""
        feats: Tensor = self.model.forward_features(images)
        if feats.ndim == 4:
            # NCHW (CNNs) unless the channel dim is already last (some NHWC models, e.g. Swin).
            if feats.shape[1] == self.out_width and feats.shape[-1] != self.out_width:
                feats = feats.permute(0, 2, 3, 1)
            return feats
        tokens = feats[:, self.num_prefix_tokens :]
        n, count, c = tokens.shape
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(
                f"timm model {type(self.model).__name__} gave {count} patch tokens, not a square grid"
            )
        return tokens.reshape(n, side, side, c)


def build_vision(cfg: ModelConfig, *, frame_size: int) -> ViTEncoder | TimmEncoder:
    """Pick the encoder named by ``model.vision_backbone``."""
    if cfg.vision_backbone == "timm":
        return TimmEncoder(model_name=cfg.timm_model, weights=cfg.timm_weights)
    return ViTEncoder(
        frame_size=frame_size,
        patch_size=cfg.patch_size,
        width=cfg.vision_width,
        depth=cfg.vision_depth,
        heads=cfg.vision_heads,
        dropout=cfg.dropout,
        stem=cfg.patch_stem,
    )
