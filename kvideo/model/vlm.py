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

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kvideo.config.model import ModelConfig
from kvideo.data.tokenizer import IGNORE_INDEX  # the labels the tokenizer writes
from kvideo.model.blocks import recompute_in_backward, transformer_blocks
from kvideo.model.lm import CausalLM
from kvideo.model.projector import FrameProjector
from kvideo.model.regions import patch_coverage
from kvideo.model.sequence import splice
from kvideo.model.vision import TimmEncoder, ViTEncoder, build_vision

if TYPE_CHECKING:
    from kvideo.model.hf_vlm import HFVideoLanguageModel


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


def caption_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Shifted cross-entropy: ``(loss, nll (B,), ntokens (B,))`` with logits[:, i] -> labels[:, i+1].

    Computed in fp32 whatever the autocast dtype: bf16 log-softmax over the vocabulary loses
    enough precision to blur the NLL differences the evaluator ranks candidates by.
    """
    pred = logits[:, :-1].float()
    targets = labels[:, 1:]
    token_nll = F.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)  # exactly 0 at ignored positions
    nll = token_nll.sum(dim=1)
    ntokens = (targets != IGNORE_INDEX).sum(dim=1)
    loss = nll.sum() / ntokens.sum().clamp(min=1)
    return loss, nll, ntokens


def frames_to_visual_tokens(
    vision: nn.Module,
    projector: FrameProjector,
    frames: Tensor,
    frame_mask: Tensor,
    frame_times: Tensor | None,
    frame_region: Tensor | None = None,
    *,
    resize: str = "square",
) -> tuple[Tensor, Tensor]:
    """(B, F, 3, H, W) frames -> ``(visual tokens (B, V, D) at the LM width, keys (B, V) bool)``:
    the vision part per frame (frames folded into the batch), then the projector. Both model
    families run this. ``keys`` are the tokens the LM may attend to.

    ``frame_region`` (B, 4) (``kvideo.model.regions``) with ``resize``: ``keep_aspect`` pools each
    token from the picture's patches only (the builtin ViT also hides padding patches from the
    others), and a token that pools no picture is not a key; ``max_pixels`` runs each clip at its
    own size (clips of one shape together, so a clip's tokens never depend on its batch) and pads
    the token rows to the batch's longest, V = F * the most tokens per frame.
    """
    f = frames.shape[1]
    if frame_mask.shape != frames.shape[:2]:
        raise ValueError(
            f"frame_mask {tuple(frame_mask.shape)} does not match frames (B, F) {tuple(frames.shape[:2])}"
        )
    frame_keys = frame_mask.to(torch.bool)
    if frame_region is None or resize == "square":
        grid = vision(frames.flatten(0, 1))  # (B*F, gh, gw, C)
        visual: Tensor = projector(grid, f, frame_mask, frame_times)
        return visual, frame_keys.repeat_interleave(projector.tokens_per_frame, dim=1)
    if resize == "keep_aspect":
        canvas = (frames.shape[-2], frames.shape[-1])
        patch = int(getattr(vision, "patch_size", 0))  # the builtin ViT and HF towers; not timm
        patch_keys = None
        if patch:
            coverage = patch_coverage(frame_region, canvas, (canvas[0] // patch, canvas[1] // patch))
            patch_keys = (coverage > 0).repeat_interleave(f, dim=0)
        grid = vision(frames.flatten(0, 1), patch_keys)
        if not patch:
            coverage = patch_coverage(frame_region, canvas, (grid.shape[1], grid.shape[2]))
        visual = projector(
            grid, f, frame_mask, frame_times, patch_weight=coverage.repeat_interleave(f, dim=0)
        )
        valid = projector.token_validity(coverage)  # (B, T)
        return visual, (frame_keys[:, :, None] & valid[:, None, :]).flatten(1)
    return _clips_at_own_size(vision, projector, frames, frame_keys, frame_times, frame_region)


def _clips_at_own_size(
    vision: nn.Module,
    projector: FrameProjector,
    frames: Tensor,
    frame_keys: Tensor,
    frame_times: Tensor | None,
    frame_region: Tensor,
) -> tuple[Tensor, Tensor]:
    """``resize=max_pixels``: each clip's picture (at the top left of its frames) through the
    tower and the projector at its own shape; token rows right-padded, padding not a key."""
    b, f = frames.shape[:2]
    grid = getattr(vision, "grid", None)  # the square's patch grid (HFVisionTower)
    if grid is None:
        raise ValueError("video.resize=max_pixels needs a vision part with a patch grid (model=hf_vlm)")
    stride = int(grid) // projector.side
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, (_, _, h, w) in enumerate(frame_region.tolist()):
        shapes.setdefault((h, w), []).append(i)
    tokens_of: dict[int, Tensor] = {}
    for (h, w), clips in shapes.items():
        index = torch.tensor(clips, device=frames.device)
        picture = frames.index_select(0, index)[..., :h, :w]
        grid = vision(picture.flatten(0, 1))
        times = None if frame_times is None else frame_times.index_select(0, index.to(frame_times.device))
        tokens = projector(grid, f, frame_keys.index_select(0, index), times, stride=stride)
        tokens_of.update(zip(clips, tokens, strict=True))
    kept = [tokens_of[i] for i in range(b)]
    longest = max(row.shape[0] for row in kept)
    visual = kept[0].new_zeros((b, longest, kept[0].shape[-1]))
    keys = torch.zeros(b, longest, dtype=torch.bool, device=frames.device)
    for i, row in enumerate(kept):
        visual[i, : row.shape[0]] = row
        keys[i, : row.shape[0]] = frame_keys[i].repeat_interleave(row.shape[0] // f)
    return visual, keys


def with_loss(logits: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
    """The models' output dict: ``logits``, plus ``loss``, ``nll``, ``ntokens`` given labels."""
    out = {"logits": logits}
    if labels is not None:
        out["loss"], out["nll"], out["ntokens"] = caption_nll(logits, labels)
    return out


class VisualTokens:
    """``visual_tokens`` for a model with ``vision``, ``projector`` and ``resize`` (both families)."""

    vision: nn.Module
    projector: FrameProjector
    resize: str

    def visual_tokens(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        frame_times: Tensor | None,
        frame_region: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(visual tokens (B, V, D), keys (B, V))``: ``frames_to_visual_tokens`` of this model."""
        return frames_to_visual_tokens(
            self.vision, self.projector, frames, frame_mask, frame_times, frame_region, resize=self.resize
        )


class VideoLanguageModel(VisualTokens, nn.Module):
    """Frames + text ids -> caption loss / logits / per-sample NLL. See the module docstring."""

    def __init__(
        self,
        *,
        vision: ViTEncoder | TimmEncoder,
        projector: FrameProjector,
        lm: CausalLM,
        tokens_per_frame: int,
        max_frames: int,
        resize: str = "square",
    ) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.lm = lm
        self.tokens_per_frame = tokens_per_frame
        self.max_frames = max_frames
        self.resize = resize

    def forward(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        input_ids: Tensor,
        labels: Tensor | None = None,
        frame_times: Tensor | None = None,
        visual_at: Tensor | None = None,
        frame_region: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``frames`` (B, F, 3, H, W) normalized float, ``frame_mask`` bool (B, F),
        ``input_ids`` / ``labels`` long (B, L), ``frame_times`` float (B, F) seconds (needed
        only with ``model.time_embedding``), ``visual_at`` long (B,) text tokens before the
        visual tokens (None = none: ``[visual | text]``), ``frame_region`` long (B, 4) where the
        picture is in padded frames (``video.resize=keep_aspect``; ``kvideo.model.regions``).

        Returns ``logits`` (B, L, V) for the text positions and, when ``labels`` is given,
        ``loss`` (scalar), ``nll`` (B,) and ``ntokens`` (B,).
        """
        visual, keys = self.visual_tokens(frames, frame_mask, frame_times, frame_region)
        attn_mask = attention_mask(keys, input_ids.shape[1], visual_at)
        return with_loss(self.lm(visual, input_ids, attn_mask, visual_at), labels)

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
        max_new_tokens: int,
        stop_ids: list[int],
        synced: bool = False,
    ) -> list[list[int]]:
        """Greedy continuation of ``context_ids`` (B, C) for each clip, up to a stop id (excluded) or
        ``max_new_tokens``, or until the sequence reaches ``model.max_seq_len``. ``visual_at`` as
        in ``forward``: each must be below C, so the context goes on after the video.
        ``synced``: go on to ``max_new_tokens`` after every row has stopped, so that the ranks of
        a sharded model (whose every forward is a collective) run the same number of forwards.

        No KV cache: the builtin LM is small, and a full forward per token keeps this the exact
        computation the loss trains (the same masks, the same positions).
        """
        visual, keys = self.visual_tokens(frames, frame_mask, frame_times, frame_region)
        ids = context_ids
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            if visual.shape[1] + ids.shape[1] >= self.lm.max_seq_len:
                break
            attn_mask = attention_mask(keys, ids.shape[1], visual_at)
            next_id = self.lm(visual, ids, attn_mask, visual_at)[:, -1].argmax(-1)
            next_id = torch.where(finished, torch.full_like(next_id, stop_ids[0]), next_id)
            ids = torch.cat([ids, next_id[:, None]], dim=1)
            finished |= torch.isin(next_id, torch.tensor(stop_ids, device=next_id.device))
            if not synced and bool(finished.all()):
                break
        return [until_eos(row, stop_ids) for row in ids[:, context_ids.shape[1] :].tolist()]


def until_eos(ids: list[int], stop_ids: list[int]) -> list[int]:
    """The generated ids before the first stop id (EOS, or the chat template's end of turn)."""
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids


def build_model(
    cfg: ModelConfig,
    *,
    vocab_size: int,
    max_frames: int,
    frame_size: int,
    tie_embeddings: bool = True,
    resize: str = "square",
) -> VideoLanguageModel | HFVideoLanguageModel:
    """Build the model from ``cfg.model`` plus the data-side sizes it depends on.

    ``vocab_size`` comes from the tokenizer, ``max_frames`` / ``frame_size`` from ``cfg.video``
    (they size the frame-position and patch-position tables), ``resize`` is ``video.resize`` (how
    a batch's ``frame_region`` is read). ``model.family=hf`` loads the pretrained parts
    (``kvideo.model.hf_vlm``).
    """
    if cfg.family == "hf":
        from kvideo.model.hf_vlm import build_hf_model

        return build_hf_model(cfg, vocab_size=vocab_size, max_frames=max_frames, resize=resize)
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
    )
    if cfg.activation_checkpointing:
        for block in transformer_blocks(model):
            recompute_in_backward(block)
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied head is counted once, as ``parameters()`` dedups)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_summary(model: nn.Module) -> str:
    """One log line with the per-part split, so a config change shows where the parameters went."""
    parts = {name: getattr(model, name) for name in ("vision", "projector", "lm")}
    body = " | ".join(
        f"{name} {count_parameters(part):,} ({count_parameters(part, trainable_only=True):,} trainable)"
        for name, part in parts.items()
    )
    return f"parameters: {body} | total {count_parameters(model):,}"
