"""Projector: each frame's patch grid -> ``tokens_per_frame`` LM-width tokens, with time order.

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

Time: with ``time_embedding`` each frame's tokens also get an embedding of its display time
in seconds (sinusoids of periods 0.25 s to ~1 h through a zero-initialised linear layer, so a
pretrained LM sees unchanged features at step 0). The frame index alone says order, not
spacing, and the sampling policies space frames differently (uniform over the clip, 1/fps,
Qwen's frame grid): the time says both. Time as text tokens (LLaVA-Video's "frames at 0.0s,
1.5s, ...") was not chosen: it costs LM tokens per frame and makes the text length depend on
the decode, which breaks the exact compose-time token budget.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kvideo.model.lm import init_position_table, init_weights

# Sinusoid periods from 0.25 s (a few frames apart at 8 fps) to 0.25 * 2^14 s (over an hour).
TIME_FREQUENCIES = 15
_SHORTEST_PERIOD_S = 0.25


def time_features(seconds: Tensor) -> Tensor:
    """(...,) seconds -> (..., 2 * TIME_FREQUENCIES) sin/cos at doubling periods; padding times
    (-1) are clamped to 0 (their tokens are masked anyway)."""
    periods = _SHORTEST_PERIOD_S * 2.0 ** torch.arange(TIME_FREQUENCIES, device=seconds.device)
    angles = 2 * math.pi * seconds.clamp(min=0)[..., None] / periods.to(seconds.dtype)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FrameProjector(nn.Module):
    """Pool (k x k) -> LayerNorm -> Linear-GELU-Linear (or Linear) -> + frame position + token
    position (+ motion, + time)."""

    def __init__(
        self,
        *,
        in_width: int,
        out_width: int,
        tokens_per_frame: int,
        max_frames: int,
        motion_tokens: bool = False,
        time_embedding: bool = False,
        kind: str = "mlp2x_gelu",
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
        self.proj = (
            nn.Sequential(nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width))
            if kind == "mlp2x_gelu"
            else nn.Linear(in_width, out_width)
        )
        self.motion = (
            nn.Sequential(nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width))
            if motion_tokens
            else None
        )
        self.frame_pos = nn.Parameter(torch.zeros(max_frames, out_width))
        self.token_pos = nn.Parameter(torch.zeros(tokens_per_frame, out_width))
        self.time = nn.Linear(2 * TIME_FREQUENCIES, out_width) if time_embedding else None
        self.apply(init_weights)
        init_position_table(self.frame_pos)
        init_position_table(self.token_pos)
        if self.time is not None:
            nn.init.zeros_(self.time.weight)

    def forward(
        self,
        grid: Tensor,
        num_frames: int,
        frame_mask: Tensor | None = None,
        frame_times: Tensor | None = None,
        *,
        patch_weight: Tensor | None = None,
        stride: int = 0,
    ) -> Tensor:
        """``grid`` (B*F, gh, gw, C) with F = ``num_frames`` -> visual tokens (B, F*T, D).

        Tokens are frame-major (all of frame 0, then frame 1, ...), which the attention mask
        relies on when it repeats ``frame_mask`` ``tokens_per_frame`` times per frame.

        ``patch_weight`` (B*F, gh, gw): the share of each patch that is picture rather than
        padding (``video.resize=keep_aspect``); the k x k pooling then averages the picture only
        (``token_validity`` says which tokens have any). ``stride`` (``resize=max_pixels``): pool
        stride x stride patches per token instead, so the token grid follows the frame's shape
        (T = gh/stride * gw/stride), the token positions interpolated from the k x k table.
        """
        if num_frames > self.max_frames:
            raise ValueError(f"{num_frames} frames > the projector's max_frames ({self.max_frames})")
        x = grid.permute(0, 3, 1, 2)  # (N, C, gh, gw)
        if stride:
            pooled = F.avg_pool2d(x, stride)
        elif patch_weight is not None:
            weight = patch_weight[:, None].to(x.dtype)
            mass = F.adaptive_avg_pool2d(weight, self.side)
            pooled = F.adaptive_avg_pool2d(x * weight, self.side) / mass.clamp(min=1e-6)
        else:
            pooled = F.adaptive_avg_pool2d(x, self.side)  # (N, C, k, k)
        features = self.norm(pooled.flatten(2).transpose(1, 2))  # (N, T, C)
        tokens: Tensor = self.proj(features).unflatten(0, (-1, num_frames))  # (B, F, T, D)
        if self.motion is not None:
            tokens = tokens + self.motion(self._feature_change(features, num_frames, frame_mask))
        tokens = tokens + self.frame_pos[:num_frames, None, :] + self._token_positions(*pooled.shape[-2:])
        if self.time is not None:
            if frame_times is None:
                raise ValueError("this projector embeds frame times: pass frame_times (B, F)")
            tokens = tokens + self.time(time_features(frame_times.to(tokens.dtype)))[:, :, None, :]
        return tokens.flatten(1, 2)

    def token_validity(self, patch_weight: Tensor) -> Tensor:
        """(N, gh, gw) picture share per patch -> (N, T) bool: the k x k tokens that pool any picture."""
        mass = F.adaptive_avg_pool2d(patch_weight[:, None].float(), self.side)
        return (mass > 0).flatten(1)

    def _token_positions(self, rows: int, cols: int) -> Tensor:
        """The (T, D) token positions of a rows x cols token grid: the k x k table as is, else
        bilinearly resized (as ViTs resize their position grids for other image sizes)."""
        if (rows, cols) == (self.side, self.side):
            return self.token_pos
        table = self.token_pos.view(1, self.side, self.side, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(table, size=(rows, cols), mode="bilinear", align_corners=False)
        return resized[0].flatten(1).transpose(0, 1)

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
