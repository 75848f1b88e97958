"""A released video VLM (``model=pretrained``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision,
LLaVA-NeXT-Video, SmolVLM2, InternVL3) behind kvideo's model interface: the same
``forward(frames, frame_mask, input_ids, labels, ...)`` and ``generate`` as the other families, so
the trainer, the validator and the evaluator do not change.

The model is transformers' own class (``AutoModelForImageTextToText``, loaded offline from
``model.path``), kept whole in ``self.hf``: its parameter names are the checkpoint's with ``hf.``
in front, and its ``save_pretrained`` writes the export. Per batch this module:

* turns each clip's valid frames (cropped to their picture with ``video.resize=max_pixels``) into
  the model's video inputs (Qwen: ``kvideo.model.video_patches``, with the time one temporal
  patch really spans, Qwen2.5-VL's ``second_per_grid_ts``; LLaVA-OneVision and LLaVA-NeXT-Video:
  the frames themselves, ``kvideo.model.llava_inputs``; SmolVLM2 and InternVL3: each frame an
  image, ``kvideo.model.image_text_inputs``), and each picture into its family's image route;
* splices ``<|vision_start|>``, one ``<|video_pad|>`` per merged patch and ``<|vision_end|>`` into
  the text at ``visual_at`` (each clip at its own, for records of several:
  ``kvideo.model.record_clips``) (Qwen3-VL: around each temporal patch, after its time as text), where
  the chat template put the ``<video>`` placeholder (the rows are conversations:
  ``kvideo.data.tokenizer.encode_row``), which is what Qwen's processor does to the rendered
  template; labels there are ``-100``; SmolVLM2's and InternVL3's video is text around image
  tokens (``kvideo.model.video_text``), so its context is tokenized again with that text in place;
* lets the model place its own multimodal rope positions (``get_rope_index``) from those ids;
* packed (``data.packing``), runs the spliced rows' real tokens in rows of several samples
  (``packed_logits``): the padded rows' positions, packed, and the video in the rows' order
  (``kvideo.model.video_inputs``).

The loss is kvideo's (``kvideo.model.loss``): the same per-sample NLL as the other families, so
validation and candidate ranking compare like with like. A clip with no decodable frame gets one
black frame: its labels are all ``-100`` (``kvideo.data.clip_dataset``), so it carries no loss.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from kvideo.data.tokenizer import IGNORE_INDEX
from kvideo.hf_folders import VideoVlmGeometry
from kvideo.model.generate import until_eos
from kvideo.model.image_text_inputs import ImageTextClips, image_text_inputs
from kvideo.model.llava_inputs import LlavaClips, llava_inputs
from kvideo.model.loss import with_loss
from kvideo.model.packing import (
    PackedRows,
    columns_holding,
    pack,
    pack_layout,
    real_text,
    restarting_positions,
    sample_order,
    slots_of,
    token_counts,
    unpack_columns,
)
from kvideo.model.qwen_inputs import QwenClips, qwen_inputs
from kvideo.model.record_clips import RecordClips, record_clips
from kvideo.model.video_inputs import VideoInputs
from kvideo.model.video_patches import group_times

# transformers' modality ids (``ProcessorMixin.create_mm_token_type_ids``): 0 text, 1 image, 2 video
IMAGE_TOKEN_TYPE = 1
VIDEO_TOKEN_TYPE = 2


class PretrainedVLM(nn.Module):
    """Frames + text ids -> caption loss / logits / per-sample NLL (see the module docstring)."""

    hf: Any  # a transformers (or peft) model: generate and config are not nn.Module's

    def __init__(
        self,
        hf: nn.Module,
        geometry: VideoVlmGeometry,
        tokenizer: Any = None,
        max_tokens_per_row: int | None = None,
        picture_processor: Any = None,
    ) -> None:
        """``tokenizer``: the model's own (transformers'), for the families that write time as
        text (Qwen3-VL, SmolVLM2, InternVL3). ``max_tokens_per_row``: ``ModelSizes``'.
        ``picture_processor``: SmolVLM2's image processor (its rule for a picture's tiles)."""
        super().__init__()
        self.picture_processor = picture_processor
        self.max_tokens_per_row = max_tokens_per_row  # None = padded
        self.hf = hf
        self.geometry = geometry
        self.tokenizer = tokenizer
        config: Any = hf.config
        # SmolVLM2 and InternVL3 have no video token in the model: their frames are images
        self.video_id = int(getattr(config, "video_token_id", None) or config.image_token_id)
        self.image_id = int(getattr(config, "image_token_id", None) or -1)  # Qwen's picture route
        # Qwen's markers around a clip; LLaVA-OneVision has none (-1)
        self.start_id = int(getattr(config, "vision_start_token_id", None) or -1)
        self.end_id = int(getattr(config, "vision_end_token_id", None) or -1)
        # Fills rows shorter than the batch's longest after splicing: any id that is not a vision
        # token works (those positions are after the row's text and carry no label).
        self.pad_id = int(getattr(config.get_text_config(), "pad_token_id", None) or 0)

    # ------------------------------------------------------------------ inputs

    def video_inputs(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        frame_times: Tensor,
        frame_region: Tensor | None,
        pictures: list[bool] | None = None,
        picture_sizes: list[tuple[int, int]] | None = None,
        rows: list[int] | None = None,
    ) -> VideoInputs:
        """The model's video (and image) keyword arguments for a batch of clips, and each clip's
        token ids in the text (``video_block``), or for SmolVLM2 and InternVL3 its text.
        ``pictures``: which clips are pictures, each read through its family's image route: Qwen's
        (``kvideo.model.qwen_inputs``), LLaVA's (``kvideo.model.llava_inputs``: a picture's tiles,
        sized by ``picture_sizes``; ``rows``: each clip's batch row), SmolVLM2's and InternVL3's
        (its tiles in its image text: ``kvideo.model.image_text_inputs``)."""
        g = self.geometry
        count = frames.shape[0]
        flags = pictures or [False] * count
        sizes = picture_sizes or [(0, 0)] * count
        if g.frames_as_images:
            texts = ImageTextClips(frames, frame_mask, frame_times, flags, sizes)
            return image_text_inputs(texts, g, self.picture_processor)
        if g.image_size:
            llava = LlavaClips(frames, frame_mask, flags, sizes, rows or list(range(count)))
            return llava_inputs(llava, g, self.inner_model())
        qwen = QwenClips(frames, frame_mask, frame_times, frame_region, pictures)
        return qwen_inputs(qwen, g, self.video_block, self.picture_block)

    def clip_inputs(self, clips: RecordClips) -> VideoInputs:
        """``video_inputs`` of a batch's clips."""
        return self.video_inputs(
            clips.frames,
            clips.frame_mask,
            clips.frame_times,
            clips.frame_region,
            clips.pictures,
            clips.picture_sizes,
            clips.rows,
        )

    def video_block(self, grid: tuple[int, int, int], times: Tensor) -> list[int]:
        """A clip's ids in the text, as the model's processor writes them: Qwen2-VL and Qwen2.5-VL
        ``<|vision_start|>``, one ``<|video_pad|>`` per merged patch, ``<|vision_end|>``; Qwen3-VL
        the same around each temporal patch, after its time as text (``<1.2 seconds>``: the mean
        display time of the patch's first and last frame, the last frame repeated to fill it)."""
        groups, height, width = grid
        per_group = height * width // self.geometry.merge_size**2
        if not self.geometry.timestamps_as_text:
            return [self.start_id, *([self.video_id] * (groups * per_group)), self.end_id]
        block: list[int] = []
        for stamp in group_times(times, self.geometry.temporal_patch_size, groups):
            block += self._encode(f"<{stamp:.1f} seconds>")
            block += [self.start_id, *([self.video_id] * per_group), self.end_id]
        return block

    def picture_block(self, grid: tuple[int, int, int]) -> list[int]:
        """A picture's ids in Qwen's text: ``<|vision_start|>``, one ``<|image_pad|>`` per merged
        patch, ``<|vision_end|>`` (no time: a picture has none)."""
        count = grid[0] * grid[1] * grid[2] // self.geometry.merge_size**2
        return [self.start_id, *([self.image_id] * count), self.end_id]

    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def spliced(
        self,
        input_ids: Tensor,
        labels: Tensor | None,
        visual_at: Tensor | list[int],
        blocks: list[list[int]] | list[str],
        rows: list[int] | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``input_ids`` (and ``labels``) with each clip's ``video_block`` at its ``visual_at``
        in its row (``rows``: each clip's row, None = clip ``i`` in row ``i``), right-padded to
        the longest row (with the pad id; labels ``-100``), and each row's length before that
        padding (B,). A row's clips go in from its last, so each place still counts the text
        before it. A block of text (SmolVLM2, InternVL3) goes in as text: see ``retokenized``."""
        owners = list(range(len(blocks))) if rows is None else rows
        places = [int(at) for at in visual_at]
        id_rows, label_rows = [], []
        for b in range(input_ids.shape[0]):
            row, row_labels = input_ids[b], None if labels is None else labels[b]
            for clip in reversed([c for c, owner in enumerate(owners) if owner == b]):
                at, block = places[clip], blocks[clip]
                if isinstance(block, str):
                    row, row_labels = self.retokenized(row, row_labels, at, block)
                    continue
                block_ids = input_ids.new_tensor(block)
                row = torch.cat([row[:at], block_ids, row[at:]])
                if row_labels is not None:
                    ignored = torch.full_like(block_ids, IGNORE_INDEX)
                    row_labels = torch.cat([row_labels[:at], ignored, row_labels[at:]])
            id_rows.append(row)
            if row_labels is not None:
                label_rows.append(row_labels)
        ids = nn.utils.rnn.pad_sequence(id_rows, batch_first=True, padding_value=self.pad_id)
        lengths = torch.tensor([row.shape[0] for row in id_rows], device=ids.device)
        if labels is None:
            return ids, None, lengths
        label_ids = nn.utils.rnn.pad_sequence(label_rows, batch_first=True, padding_value=IGNORE_INDEX)
        return ids, label_ids, lengths

    def retokenized(
        self, ids: Tensor, labels: Tensor | None, at: int, text: str
    ) -> tuple[Tensor, Tensor | None]:
        """A row with ``text`` at ``at``, tokenized as the processor tokenizes the rendered
        conversation: the untrained stretch around ``at`` (from the end of the target before it
        to the start of the target after it) is decoded, joined with ``text`` and encoded as one
        string, so words at its edges merge as they do in the processor's text. Byte-level BPE
        decodes its own encoding exactly, so nothing else changes."""
        trained = (labels != IGNORE_INDEX).nonzero().flatten().tolist() if labels is not None else []
        start = max([i + 1 for i in trained if i < at], default=0)
        end = min([i for i in trained if i >= at], default=ids.shape[0])
        decode = partial(self.tokenizer.decode, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        middle = ids.new_tensor(
            self._encode(decode(ids[start:at].tolist()) + text + decode(ids[at:end].tolist()))
        )
        row = torch.cat([ids[:start], middle, ids[end:]])
        if labels is None:
            return row, None
        return row, torch.cat([labels[:start], torch.full_like(middle, IGNORE_INDEX), labels[end:]])

    # ------------------------------------------------------------------ the interface

    def forward(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        input_ids: Tensor,
        labels: Tensor | None = None,
        *,
        frame_times: Tensor,
        visual_at: Tensor,
        frame_region: Tensor | None = None,
        text_len: Tensor | None = None,
        picture: Tensor | None = None,
        picture_size: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """As the other families' ``forward``; ``visual_at`` is required (every row is a
        conversation; (B, K) for records of several visuals: ``record_clips``). Padded, the
        padding after a row's text stays visible to the keys: the causal mask hides it from every
        real token, as kvideo's other models do. Packed (``max_tokens_per_row`` not None):
        ``packed_logits``."""
        clips = record_clips(
            frames,
            frame_mask,
            frame_times,
            frame_region,
            visual_at,
            input_ids.shape[1],
            picture,
            picture_size,
        )
        video = self.clip_inputs(clips)
        ids, spliced_labels, lengths = self.spliced(input_ids, labels, clips.places, video.blocks, clips.rows)
        text_padding = input_ids.shape[1] - real_text(input_ids, text_len).sum(dim=1)
        real = torch.arange(ids.shape[1], device=ids.device)[None] < (lengths - text_padding)[:, None]
        if self.max_tokens_per_row is None:
            out = self.hf(**self.text_inputs(ids), **video.kwargs, use_cache=False)
            return {**with_loss(out.logits, spliced_labels), **token_counts(real, real.numel())}
        packed = pack_layout(real, self.max_tokens_per_row)
        logits = self.packed_logits(ids, spliced_labels, video, packed, clips)
        return {**with_loss(logits, spliced_labels), **token_counts(real, packed.computed)}

    def packed_logits(
        self, ids: Tensor, labels: Tensor | None, video: VideoInputs, packed: PackedRows, clips: RecordClips
    ) -> Tensor:
        """(B, S, V) logits of the model run on the ``packed`` rows of the spliced ``ids`` (B, S):
        no attention mask, and position ids that restart at each sample, from which transformers
        builds the block-diagonal causal mask (or takes its flash-attention varlen path). Qwen's
        multimodal rope positions are the model's own for the padded rows (``get_rope_index``),
        packed beside them as its 4-row ``position_ids`` (text positions first) say. The video
        arguments follow the samples' order in the rows (each sample's ``clips`` in turn). Logits
        are computed (``logits_to_keep``) and returned only where a label is predicted (given
        ``labels``), 0 elsewhere."""
        batch, seq = ids.shape
        positions = torch.arange(seq, device=ids.device).expand(batch, seq)
        packed_ids = pack(ids, packed).masked_fill(packed.segment < 0, self.pad_id)
        inputs = self.text_inputs(packed_ids)
        del inputs["attention_mask"]
        inputs["position_ids"] = restarting_positions(positions, packed)
        if self.geometry.model_type.startswith("qwen"):
            rope, _ = self.inner_model().get_rope_index(
                ids,
                mm_token_type_ids=self.text_inputs(ids)["mm_token_type_ids"],
                attention_mask=torch.ones_like(ids),  # as the padded forward's
                **{k: v for k, v in video.kwargs.items() if not k.startswith("pixel_values")},
            )  # (3, B, S)
            packed_rope = pack(rope.permute(1, 2, 0), packed).permute(2, 0, 1)
            inputs["position_ids"] = torch.cat([inputs["position_ids"][None], packed_rope])
        predicting = torch.ones_like(ids, dtype=torch.bool)
        if labels is not None:
            predicting = torch.zeros_like(predicting)
            predicting[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        slot = slots_of(positions, packed).masked_fill(~predicting, -1)
        keep = columns_holding(slot, packed)
        video_kwargs = video.in_order(clips.in_rows(sample_order(packed)))
        out = self.hf(**inputs, **video_kwargs, logits_to_keep=keep, use_cache=False)
        return unpack_columns(out.logits, keep, slot, packed)

    def inner_model(self) -> Any:
        """The model inside ``hf`` (under peft's wrappers when LoRA is on): the owner of Qwen's
        ``get_rope_index`` and LLaVA's ``pack_image_features``."""
        return getattr(self.hf, "get_base_model", lambda: self.hf)().model

    def text_inputs(self, ids: Tensor) -> dict[str, Tensor]:
        """``input_ids``, the attention mask, and for Qwen ``mm_token_type_ids`` (2 on video
        tokens, as the processor returns it): without it the model cannot place its multimodal
        rope positions and silently falls back to 1-D ones."""
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.geometry.model_type.startswith("qwen"):
            types = (ids == self.video_id).to(torch.int32) * VIDEO_TOKEN_TYPE
            inputs["mm_token_type_ids"] = types + (ids == self.image_id).to(torch.int32) * IMAGE_TOKEN_TYPE
        return inputs

    @torch.no_grad()
    def generate(  # noqa: PLR0913 (the families' one generate interface, plus the picture inputs)
        self,
        frames: Tensor,
        frame_mask: Tensor,
        context_ids: Tensor,
        *,
        frame_times: Tensor,
        visual_at: Tensor,
        frame_region: Tensor | None = None,
        context_len: Tensor | None = None,
        max_new_tokens: int,
        stop_ids: list[int],
        synced: bool = False,
        picture: Tensor | None = None,
        picture_size: Tensor | None = None,
    ) -> list[list[int]]:
        """Greedy answers after ``context_ids`` (a conversation up to its answer), through the
        model's own ``generate``, up to the first stop id (excluded). ``context_len`` (B,): each
        row's context is its first ``context_len`` ids (None = all); rows of several lengths are
        left-padded after their video is spliced in, their padding masked, as a processor with
        ``padding_side="left"`` gives them to ``generate``."""
        clips = record_clips(
            frames,
            frame_mask,
            frame_times,
            frame_region,
            visual_at,
            context_ids.shape[1],
            picture,
            picture_size,
        )
        video = self.clip_inputs(clips)
        blocks = video.blocks
        if context_len is None:
            ids, _, _ = self.spliced(context_ids, None, clips.places, blocks, clips.rows)
            inputs = self.text_inputs(ids)
        else:
            rows = []
            for b, n in enumerate(context_len.tolist()):
                own = clips.of_row(b)
                row_blocks: Any = [blocks[c] for c in own]
                places = [min(clips.places[c], n) for c in own]
                rows.append(
                    self.spliced(context_ids[b : b + 1, :n], None, places, row_blocks, [0] * len(own))[0][0]
                )
            ids = nn.utils.rnn.pad_sequence(
                rows, batch_first=True, padding_value=self.pad_id, padding_side="left"
            )
            inputs = self.text_inputs(ids)
            width = ids.shape[1]
            lengths = torch.tensor([row.shape[0] for row in rows], device=ids.device)
            inputs["attention_mask"] = (
                torch.arange(width, device=ids.device)[None] >= (width - lengths)[:, None]
            ).long()
        out = self.hf.generate(
            **inputs,
            **video.kwargs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=self.pad_id,
            synced_gpus=synced,
        )
        return [until_eos(row.tolist(), stop_ids) for row in out[:, ids.shape[1] :]]
