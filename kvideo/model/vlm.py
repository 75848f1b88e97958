"""The video-language model: ViT per frame -> projector -> causal LM over ``[visual | text]``.

Loss convention (the contract with the data pipeline and the evaluator):

* ``labels`` are ALIGNED with ``input_ids`` (same length, -100 = not a target), and the model
  shifts: the logits at text position ``i`` predict ``labels[:, i + 1]``.
* ``labels[:, 0]`` is never a target. The text is expected to start with a BOS / prompt token
  (whose label is -100 anyway). We deliberately do not predict the first text token from the
  last visual position: frames are padded at the end, so that position is usually a padded
  frame, and its hidden state (it always attends to itself) depends on padding pixels, which
  would break "padded frames have no effect". If a caption has no prompt and no BOS, its first
  token is simply not scored.
* ``loss`` is the mean NLL over all caption tokens of the batch (token-weighted, so a sample with
  no caption tokens contributes exactly nothing), guarded against an all-ignored batch (loss 0,
  gradient graph still attached so DDP sees every parameter used).
* ``nll`` (B,) / ``ntokens`` (B,) are the per-sample sum and count, which the evaluator uses to
  rank candidate captions (lowest NLL wins) and which reproduce ``loss`` as
  ``nll.sum() / ntokens.sum()``.

Attention: causal over the whole sequence, and the visual tokens of padded frames
(``frame_mask`` False) are removed as keys for every query. The diagonal is always allowed so no
row is fully masked (SDPA returns NaN for a row with no allowed key), which keeps a sample whose
frames are all masked (a video that failed to decode) finite: its text attends to text only.
Text padding is assumed to be on the right, where the causal mask already hides it from real
tokens, so no text key mask is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kvideo.config.model import MODEL_PARTS, ModelConfig
from kvideo.model.blocks import recompute_in_backward, transformer_blocks
from kvideo.model.generate import until_eos
from kvideo.model.lm import CausalLM
from kvideo.model.loss import with_loss
from kvideo.model.packing import (
    pack_layout,
    prefix_length,
    prefix_text_agrees,
    real_text,
    shared_prefix_layout,
    token_counts,
)
from kvideo.model.projector import FrameProjector
from kvideo.model.sequence import splice
from kvideo.model.spec import first_component
from kvideo.model.vision import TimmEncoder, ViTEncoder, build_vision
from kvideo.model.visual_tokens import VisualTokens

if TYPE_CHECKING:
    from kvideo.model.spec import ModelSizes


def build_attention_mask(
    frame_mask: Tensor, tokens_per_frame: int, text_len: int, visual_at: Tensor | None = None
) -> Tensor:
    """``attention_mask`` for ``tokens_per_frame`` tokens per frame, all of a kept frame's kept."""
    return attention_mask(
        frame_mask.to(torch.bool).repeat_interleave(tokens_per_frame, dim=1), text_len, visual_at
    )


def attention_mask(visual_keys: Tensor, text_len: int, visual_at: Tensor | None = None) -> Tensor:
    """Boolean SDPA mask (B, 1, S, S), True = may attend, for S = V + L with the visual tokens
    spliced at ``visual_at`` (``kvideo.model.sequence``; None = in front). ``visual_keys`` (B, V)
    says which visual tokens may be attended to (not those of padded frames or padding).

    Built once per forward and shared by all LM blocks (one (B, S, S) bool tensor is small:
    16 x 80 x 80 bytes at the default shape). No data-dependent control flow, so it compiles.
    """
    b = visual_keys.shape[0]
    text_keys = torch.ones(b, text_len, dtype=torch.bool, device=visual_keys.device)
    keys = splice(text_keys, visual_keys.to(torch.bool), visual_at)  # (B, S)
    s = keys.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=keys.device).tril()
    diagonal = torch.eye(s, dtype=torch.bool, device=keys.device)
    return ((causal & keys[:, None, :]) | diagonal)[:, None]


class VideoLanguageModel(VisualTokens, nn.Module):
    """Frames + text ids -> caption loss / logits / per-sample NLL. See the module docstring."""

    takes_clip_of_row = True  # candidate captions score against their clip's frames (``forward``)

    def __init__(
        self,
        *,
        vision: ViTEncoder | TimmEncoder,
        projector: FrameProjector,
        lm: CausalLM,
        tokens_per_frame: int,
        max_frames: int,
        resize: str = "square",
        max_tokens_per_row: int | None = None,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.lm = lm
        self.tokens_per_frame = tokens_per_frame
        self.max_frames = max_frames
        self.resize = resize
        self.max_tokens_per_row = max_tokens_per_row  # None = padded; see ModelSizes

    def forward(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        input_ids: Tensor,
        labels: Tensor | None = None,
        frame_times: Tensor | None = None,
        visual_at: Tensor | None = None,
        frame_region: Tensor | None = None,
        text_len: Tensor | None = None,
        clip_of_row: Tensor | None = None,
        visual: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``frames`` (B, F, 3, H, W) normalized float, ``frame_mask`` bool (B, F),
        ``input_ids`` / ``labels`` long (B, L), ``frame_times`` float (B, F) seconds (needed
        only with ``model.time_embedding``), ``visual_at`` long (B,) text tokens before the
        visual tokens (None = none: ``[visual | text]``; (B, K) for K visuals per sample, the
        frames axis then holding K clips: ``kvideo.model.sequence``), ``frame_region`` long (B, 4) where the
        picture is in padded frames (``video.resize=keep_aspect``; ``kvideo.model.regions``),
        ``text_len`` long (B,) each sample's text tokens before its padding (None = all).
        ``clip_of_row`` long (N,): the text rows (``input_ids`` (N, L) and the rest) are candidate
        captions of the B clips, row ``i`` of clip ``clip_of_row[i]`` (``kvideo.train.evaluate``):
        each clip's frames go through the vision part once and, without a gradient, its prefix
        (the text before the video and the visual tokens) through the LM once
        (``shared_prefix_layout``), with the results of one padded row per candidate.
        ``visual``: the clips' ``(visual_tokens, visual_keys)`` as an earlier forward of the same
        frames returned them (validation scores candidates after the loss forward): the vision
        part is then not run again.

        Returns ``logits`` (B, L, V) for the text positions, ``tokens`` / ``computed_tokens`` (the
        real tokens and the token slots the LM computed, ``token_counts``), ``visual_tokens`` /
        ``visual_keys`` (per clip, ``VisualTokens.rows_visual_tokens``) and, when ``labels`` is
        given, ``loss`` (scalar), ``nll`` (B,) and ``ntokens`` (B,). With ``max_tokens_per_row``
        set (``data.packing``) the LM runs on the real tokens packed into rows
        (``kvideo.model.packing``), with the same results.
        """
        per_clip, tokens, keys = self.rows_visual_tokens(
            frames,
            frame_mask,
            frame_times,
            frame_region,
            visual=visual,
            clip_of_row=clip_of_row,
            visual_at=visual_at,
        )
        real = splice(real_text(input_ids, text_len), keys.to(torch.bool), visual_at)
        if (
            clip_of_row is not None
            and not torch.is_grad_enabled()
            and prefix_text_agrees(input_ids, visual_at, clip_of_row)
        ):
            shared = shared_prefix_layout(real, prefix_length(visual_at, tokens.shape[1], real), clip_of_row)
            logits = self.lm(tokens, input_ids, None, visual_at, shared)
            return {**with_loss(logits, labels), **token_counts(real, shared.computed), **per_clip}
        if self.max_tokens_per_row is None:
            attn_mask = attention_mask(keys, input_ids.shape[1], visual_at)
            logits, computed = self.lm(tokens, input_ids, attn_mask, visual_at), real.numel()
        else:
            packed = pack_layout(real, self.max_tokens_per_row)
            logits, computed = self.lm(tokens, input_ids, None, visual_at, packed), packed.computed
        return {**with_loss(logits, labels), **token_counts(real, computed), **per_clip}

    @torch.no_grad()
    def generate(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        context_ids: Tensor,
        *,
        frame_times: Tensor | None = None,
        visual_at: Tensor | None = None,
        frame_region: Tensor | None = None,
        context_len: Tensor | None = None,
        max_new_tokens: int,
        stop_ids: list[int],
        synced: bool = False,
    ) -> list[list[int]]:
        """Greedy continuation of ``context_ids`` (B, C) for each clip, up to a stop id (excluded) or
        ``max_new_tokens``, or until the sequence reaches ``model.max_seq_len``. ``visual_at`` as
        in ``forward``: each must be below C, so the context goes on after the video.
        ``context_len`` (B,): each row's context is its first ``context_len`` ids (contexts of
        several lengths, right-padded, generate together; None = all C).
        ``synced``: go on to ``max_new_tokens`` after every row has stopped, so that the ranks of
        an FSDP model (whose every forward is a collective) run the same number of forwards.

        No KV cache: the builtin LM is small, and a full forward per token keeps this the exact
        computation the loss trains (the same masks, the same positions). Each row reads its
        next token at its own length: what lies after it (padding, a longer row's tokens) is
        hidden by the causal mask, so a row generates what it would alone.
        """
        visual, keys = self.visual_tokens(frames, frame_mask, frame_times, frame_region, visual_at)
        batch, width = context_ids.shape
        lengths = torch.full((batch,), width, device=context_ids.device)
        if context_len is not None:
            lengths = context_len.to(context_ids.device).clone()
        longest = visual.shape[1] + int(lengths.max()) + max_new_tokens
        room = max(0, min(longest, self.lm.max_seq_len) - visual.shape[1])  # text tokens that fit
        ids = torch.cat([context_ids, context_ids.new_zeros(batch, max(0, room - width))], dim=1)
        start = lengths.clone()
        rows = torch.arange(batch, device=ids.device)
        stops = torch.tensor(stop_ids, device=ids.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            finished |= lengths >= room  # a full sequence cannot take another token
            if bool(finished.all()) and not synced:
                break
            read = int(lengths.clamp(max=room).max())
            attn_mask = attention_mask(keys, read, visual_at)
            logits = self.lm(visual, ids[:, :read], attn_mask, visual_at)
            next_id = logits[rows, (lengths.clamp(max=read) - 1).clamp(min=0)].argmax(-1)
            grows = ~finished
            ids[rows[grows], lengths[grows]] = next_id[grows]
            lengths = lengths + grows.long()
            finished |= torch.isin(next_id, stops)
        return [
            until_eos(row[begin:end], stop_ids)
            for row, begin, end in zip(ids.tolist(), start.tolist(), lengths.tolist(), strict=True)
        ]


def build_builtin_model(
    cfg: ModelConfig, sizes: ModelSizes, *, tie_embeddings: bool = True
) -> VideoLanguageModel:
    """kvideo's own ViT, projector and LM from ``model.*``, with position tables sized for
    ``sizes`` (``max_frames`` frames of ``frame_size`` pixels), seeded by the caller."""
    vocab_size, max_frames, frame_size, resize = (
        sizes.vocab_size,
        sizes.max_frames,
        sizes.frame_size,
        sizes.resize,
    )
    vision = build_vision(cfg, frame_size=frame_size)
    projector = FrameProjector(
        in_width=vision.out_width,
        out_width=cfg.lm_width,
        tokens_per_frame=cfg.tokens_per_frame,
        max_frames=max_frames,
        motion_tokens=cfg.motion_tokens,
        time_embedding=cfg.time_embedding,
        kind=cfg.projector,
    )
    lm = CausalLM(
        vocab_size=vocab_size,
        width=cfg.lm_width,
        depth=cfg.lm_depth,
        heads=cfg.lm_heads,
        max_seq_len=cfg.max_seq_len,
        dropout=cfg.dropout,
        tie_embeddings=tie_embeddings,
    )
    model = VideoLanguageModel(
        vision=vision,
        projector=projector,
        lm=lm,
        tokens_per_frame=cfg.tokens_per_frame,
        max_frames=max_frames,
        resize=resize,
        max_tokens_per_row=sizes.max_tokens_per_row,
    )
    if cfg.activation_checkpointing:
        for block in transformer_blocks(model):
            recompute_in_backward(block)
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied head is counted once, as ``parameters()`` dedups)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_summary(model: nn.Module, part_of: Callable[[str], str] = first_component) -> str:
    """One log line with the per-part split, so a config change shows where the parameters went.
    ``part_of``: the model family's ``ModelSpec.part_of``."""
    total = {part: 0 for part in MODEL_PARTS}
    trainable = dict(total)
    for name, param in model.named_parameters():  # a tied head once, as parameters() does
        part = part_of(name)
        total[part] += param.numel()
        trainable[part] += param.numel() if param.requires_grad else 0
    body = " | ".join(f"{part} {total[part]:,} ({trainable[part]:,} trainable)" for part in MODEL_PARTS)
    return f"parameters: {body} | total {count_parameters(model):,}"
