"""A video-language model from pretrained Hugging Face parts: vision tower per frame -> kvideo's
projector -> causal LM, the visual tokens entering through ``inputs_embeds``.

Loading is offline: the folders come from ``kvideo.hf_folders.resolve_model_folder``
(a local folder, or a snapshot already in the Hugging Face cache) and every ``from_pretrained``
runs with ``local_files_only=True``. Weights load in fp32: the trainable parts need fp32 master
weights for AdamW, and autocast runs the matmuls in bf16 on CUDA.

Sequence layout and the loss are ``kvideo.model.vlm``'s: ``[visual | text]``, labels aligned with
``input_ids``, the logits at text position ``i`` predict ``labels[:, i + 1]``, and the LM head runs
on the text positions only (``logits_to_keep``). Masks differ in form, not in effect: the LM takes
a 2-D key mask (1 = may attend) in which the visual tokens of padded frames are 0, and position ids
count only the tokens it keeps (``cumsum(mask) - 1``), which is what ``generate`` computes from the
same mask, so a caption is generated with exactly the positions it was trained with. The first
visual token always stays visible: a clip whose frames all failed would otherwise leave queries with
no key at all (NaN in SDPA); such a slot carries no loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kvideo.config.model import ModelConfig
from kvideo.hf_folders import resolve_model_folder, tower_geometry
from kvideo.model.blocks import recompute_in_backward, transformer_blocks
from kvideo.model.generate import until_eos
from kvideo.model.hf_parts import (
    HFVisionTower,
    add_lora,
    freeze_unreachable,
    load_causal_lm,
    load_vision_model,
)
from kvideo.model.loss import with_loss
from kvideo.model.packing import (
    PackedRows,
    columns_holding,
    pack,
    pack_layout,
    real_text,
    restarting_positions,
    slots_of,
    token_counts,
    unpack_columns,
)
from kvideo.model.projector import FrameProjector
from kvideo.model.sequence import splice, text_positions
from kvideo.model.visual_tokens import VisualTokens

if TYPE_CHECKING:
    from kvideo.model.spec import ModelSizes


class HFVideoLanguageModel(VisualTokens, nn.Module):
    """Frames + text ids -> caption loss / logits / per-sample NLL (see the module docstring).

    Parts: ``vision`` (``HFVisionTower``), ``projector`` (``FrameProjector``) and ``lm`` (the
    ``AutoModelForCausalLM``, wrapped by peft when LoRA is on).
    """

    lm: Any  # PreTrainedModel or PeftModel: generate / get_input_embeddings are not nn.Module's
    takes_clip_of_row = True  # candidate captions score against their clip's frames (``forward``)

    def __init__(
        self,
        *,
        vision: HFVisionTower,
        projector: FrameProjector,
        lm: nn.Module,
        tokens_per_frame: int,
        resize: str = "square",
        max_tokens_per_row: int | None = None,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.lm = lm
        self.tokens_per_frame = tokens_per_frame
        self.resize = resize
        self.max_tokens_per_row = max_tokens_per_row  # None = padded; see ModelSizes

    def _inputs(
        self,
        visual: Tensor,
        keys: Tensor,
        input_ids: Tensor,
        visual_at: Tensor | None,
        text_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(inputs_embeds, attention_mask, position_ids)`` for the text with the visual tokens
        spliced in (``kvideo.model.sequence``): visual tokens that are not ``keys`` (padded frames,
        padding) are masked, and positions count only the kept tokens, so padding shifts nothing.
        ``text_keys`` (B, L) bool: the text tokens that are there (None = all; a left-padded
        generation context masks its padding). Each row's first token is always a key, so no
        query is left without one."""
        text = self.lm.get_input_embeddings()(input_ids)
        embeds = splice(text, visual.to(text.dtype), visual_at)
        present = torch.ones_like(input_ids, dtype=torch.bool) if text_keys is None else text_keys
        mask = splice(present, keys, visual_at).long()
        first = splice(present, torch.ones_like(keys, dtype=torch.bool), visual_at).long().argmax(dim=1)
        mask[torch.arange(mask.shape[0], device=mask.device), first] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        return embeds, mask, positions

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
        """As ``VideoLanguageModel.forward``; ``frame_times`` is needed with ``model.time_embedding``.
        With ``clip_of_row`` each clip goes through the vision part once (the LM still reads each
        candidate's whole row).

        The LM's head runs on the text positions only (``logits_to_keep``): on the union of the
        batch's text positions when samples splice the video at different places, then each
        sample's own are gathered.
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
        embeds, mask, positions = self._inputs(tokens, keys, input_ids, visual_at)
        batch, length = input_ids.shape
        where = text_positions(visual_at, length, tokens.shape[1], batch, input_ids.device)
        text = real_text(input_ids, text_len)
        real = mask.to(torch.bool) & splice(text, torch.ones_like(keys, dtype=torch.bool), visual_at)
        if self.max_tokens_per_row is not None:
            packed = pack_layout(real, self.max_tokens_per_row)
            logits = self._packed_logits(embeds, positions, where, packed)
            return {**with_loss(logits, labels), **token_counts(real, packed.computed), **per_clip}
        keep = torch.unique(where)  # sorted
        result = self.lm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=length if visual_at is None else keep,
            use_cache=False,
        )
        logits = result.logits
        if visual_at is not None:
            index = torch.searchsorted(keep, where)
            logits = logits.gather(1, index[..., None].expand(*index.shape, logits.shape[-1]))
        return {**with_loss(logits, labels), **token_counts(real, real.numel()), **per_clip}

    def _packed_logits(self, embeds: Tensor, positions: Tensor, where: Tensor, packed: PackedRows) -> Tensor:
        """(B, L, V) text logits of the LM run on ``packed`` rows (``data.packing``): no attention
        mask, and position ids that restart at each sample, from which transformers builds the
        block-diagonal causal mask (or takes its flash-attention varlen path). The head runs on
        the row slots that hold text in some row; a padding text position's logits are 0."""
        slot = slots_of(where, packed)  # (B, L) packed slot of each text token
        keep = columns_holding(slot, packed)
        result = self.lm(
            inputs_embeds=pack(embeds, packed),
            position_ids=restarting_positions(positions, packed),
            logits_to_keep=keep,
            use_cache=False,
        )
        return unpack_columns(result.logits, keep, slot, packed)

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
        """Greedy continuation of ``context_ids`` (B, C) through the LM's own ``generate`` (KV
        cache), up to the first stop id (excluded) or ``max_new_tokens``; ``visual_at``,
        ``context_len`` and ``synced`` as in ``VideoLanguageModel.generate`` (transformers'
        ``synced_gpus``: every rank steps until all have stopped). Contexts of several lengths
        are left-padded for ``generate`` (``left_padded``), their padding masked, so positions,
        which count only kept tokens, are each row's own. Rows with several visuals (``visual_at``
        (B, K)) generate one at a time, each with its own visuals only: an empty block would sit at
        the context's end, where ``generate`` reads the next token."""
        visual, keys = self.visual_tokens(frames, frame_mask, frame_times, frame_region, visual_at)
        if visual_at is not None and visual_at.dim() == 2:
            lengths = (
                [context_ids.shape[1]] * len(context_ids) if context_len is None else context_len.tolist()
            )
            return [
                self._continue(
                    *own_visuals(visual[b], keys[b], visual_at[b]),
                    context_ids[b : b + 1, :n],
                    None,
                    max_new_tokens,
                    stop_ids,
                    synced,
                )[0]
                for b, n in enumerate(lengths)
            ]
        text_keys = None
        if context_len is not None:
            context_ids, visual_at, text_keys = left_padded(context_ids, context_len, visual_at)
        return self._continue(
            visual, keys, visual_at, context_ids, text_keys, max_new_tokens, stop_ids, synced
        )

    def _continue(
        self,
        visual: Tensor,
        keys: Tensor,
        visual_at: Tensor | None,
        context_ids: Tensor,
        text_keys: Tensor | None,
        max_new_tokens: int,
        stop_ids: list[int],
        synced: bool,
    ) -> list[list[int]]:
        """``generate`` of contexts with their visual tokens in place."""
        embeds, mask, _ = self._inputs(visual, keys, context_ids, visual_at, text_keys)
        out = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=stop_ids,
            pad_token_id=stop_ids[0],
            synced_gpus=synced,
        )
        return [until_eos(row, stop_ids) for row in out.tolist()]


def own_visuals(visual: Tensor, keys: Tensor, visual_at: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One row's (V, D) tokens, (V,) keys and (K,) places -> its blocks that hold a key, as a
    batch of one ``(tokens, keys, visual_at (1, K'))``."""
    blocks = visual_at.shape[0]
    held = keys.view(blocks, -1).any(dim=1)
    held[0] = True  # a row whose visuals all failed keeps one (empty) block
    width = visual.shape[-1]
    return (
        visual.view(blocks, -1, width)[held].reshape(1, -1, width),
        keys.view(blocks, -1)[held].reshape(1, -1),
        visual_at[held][None],
    )


def left_padded(ids: Tensor, lengths: Tensor, visual_at: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``ids`` (B, C) whose rows hold ``lengths`` ids -> ``(ids, visual_at, keys)``
    with each row's ids at the right end (what ``generate`` continues from), ``visual_at`` moved
    with them (None = 0: the video first), and the (B, C) bool keys of the ids that are there."""
    width = ids.shape[1]
    lengths = lengths.to(ids.device)
    shift = width - lengths  # (B,)
    column = torch.arange(width, device=ids.device)[None]
    source = (column - shift[:, None]).clamp(min=0)
    keys = column >= shift[:, None]
    moved = torch.where(keys, ids.gather(1, source), torch.zeros_like(ids))
    at = shift if visual_at is None else visual_at.to(ids.device) + shift
    return moved, at, keys


def build_hf_model(cfg: ModelConfig, sizes: ModelSizes) -> HFVideoLanguageModel:
    """Load the tower and the LM named by ``cfg``, add the projector (and LoRA).

    ``sizes.vocab_size`` is the tokenizer's: an LM whose embedding table is smaller (tokens added
    to the tokenizer after the LM was saved) is resized to it.
    """
    vocab_size, max_frames, resize = sizes.vocab_size, sizes.max_frames, sizes.resize
    vision_folder = resolve_model_folder("model.vision_path", cfg.vision_path)
    lm_folder = resolve_model_folder("model.lm_path", cfg.lm_path)
    geometry = tower_geometry("model.vision_path", vision_folder)
    tower_model = load_vision_model(vision_folder, attn_implementation=cfg.attn_implementation)
    lm = load_causal_lm(lm_folder, attn_implementation=cfg.attn_implementation)
    if vocab_size > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(vocab_size)
    if cfg.lora_rank:
        lm = add_lora(lm, cfg)
    vision = HFVisionTower(
        tower_model,
        feature_layer=cfg.vision_feature_layer,
        image_size=geometry.image_size,
        patch_size=geometry.patch_size,
    )
    freeze_unreachable(vision)
    projector = FrameProjector(
        in_width=vision.out_width,
        out_width=int(lm.get_input_embeddings().embedding_dim),
        tokens_per_frame=cfg.tokens_per_frame,
        max_frames=max_frames,
        motion_tokens=cfg.motion_tokens,
        time_embedding=cfg.time_embedding,
        kind=cfg.projector,
    )
    model = HFVideoLanguageModel(
        vision=vision,
        projector=projector,
        lm=lm,
        tokens_per_frame=cfg.tokens_per_frame,
        resize=resize,
        max_tokens_per_row=sizes.max_tokens_per_row,
    )
    if cfg.activation_checkpointing:
        for block in transformer_blocks(model):
            recompute_in_backward(block)
    return model
