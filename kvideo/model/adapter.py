"""Adapter: each frame's patch grid -> ``tokens_per_frame`` LM-width tokens, with time order.

Pooling to a fixed k x k grid (adaptive average pooling) keeps the visual prefix a fixed
``max_frames * tokens_per_frame`` long whatever the encoder's grid is, which is what makes the
compose-time token budget exact; pooling to a grid rather than to one vector keeps coarse
spatial layout. The frame encoder never sees time, so a learned frame-position embedding
(index 0..max_frames-1) is added here: without it the LM could only infer order from the
causal mask, and a swap of two frames would be nearly invisible.

Motion: with ``motion_tokens`` each token also carries the change of its pooled feature
since the previous *valid* frame (TSN's RGB-difference idea, on features). Without it the
LM has to discover motion by comparing positions across frames through attention alone,
which a small model learns slowly; the difference makes direction a local feature.
A token of the first frame, or one whose previous frame is padding, gets a zero difference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kvideo.model.lm import init_position_table, init_weights


class FrameAdapter(nn.Module):
    """Pool (k x k) -> LayerNorm -> Linear-GELU-Linear -> + frame position + token position."""

    def __init__(
        self,
        *,
        in_width: int,
        out_width: int,
        tokens_per_frame: int,
        max_frames: int,
        motion_tokens: bool = False,
    ) -> None:
        super().__init__()
        side = math.isqrt(tokens_per_frame)
        if side * side != tokens_per_frame:
            raise ValueError(f"model.tokens_per_frame must be a square number (got {tokens_per_frame})")
        self.side = side
        self.tokens_per_frame = tokens_per_frame
        self.max_frames = max_frames
        # The norm puts any backbone's features (built-in ViT or timm) on the same scale.
        self.norm = nn.LayerNorm(in_width)
        self.proj = nn.Sequential(nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width))
        self.motion = (
            nn.Sequential(nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width))
            if motion_tokens
            else None
        )
        self.frame_pos = nn.Parameter(torch.zeros(max_frames, out_width))
        self.token_pos = nn.Parameter(torch.zeros(tokens_per_frame, out_width))
        self.apply(init_weights)
        init_position_table(self.frame_pos)
        init_position_table(self.token_pos)

    def forward(self, grid: Tensor, num_frames: int, frame_mask: Tensor | None = None) -> Tensor:
        """``grid`` (B*F, gh, gw, C) with F = ``num_frames`` -> visual tokens (B, F*T, D).

        Tokens are frame-major (all of frame 0, then frame 1, ...), which the attention mask
        relies on when it repeats ``frame_mask`` ``tokens_per_frame`` times per frame.
        """
        if num_frames > self.max_frames:
            raise ValueError(f"{num_frames} frames > the adapter's max_frames ({self.max_frames})")
        pooled = F.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2), self.side)  # (N, C, k, k)
        features = self.norm(pooled.flatten(2).transpose(1, 2))  # (N, T, C)
        tokens: Tensor = self.proj(features).unflatten(0, (-1, num_frames))  # (B, F, T, D)
        if self.motion is not None:
            tokens = tokens + self.motion(self._feature_change(features, num_frames, frame_mask))
        tokens = tokens + self.frame_pos[:num_frames, None, :] + self.token_pos
        return tokens.flatten(1, 2)

    @staticmethod
    def _feature_change(features: Tensor, num_frames: int, frame_mask: Tensor | None) -> Tensor:
        """(B*F, T, C) -> (B, F, T, C): feature minus the previous frame's, zero where either
        frame is padding (frames are padded at the end, so "previous valid" = previous)."""
        # Tensor.unflatten is unannotated in torch's stubs
        x: Tensor = features.unflatten(0, (-1, num_frames))  # type: ignore[no-untyped-call]
        change = torch.zeros_like(x)
        change[:, 1:] = x[:, 1:] - x[:, :-1]
        if frame_mask is not None:
            both = frame_mask.clone()
            both[:, 1:] &= frame_mask[:, :-1]
            both[:, 0] = False
            change = change * both[:, :, None, None].to(change.dtype)
        return change
