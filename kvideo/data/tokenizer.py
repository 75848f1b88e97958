"""Tokenizers: ``build_tokenizer`` picks the run's (the byte tokenizer by default, a local
``tokenizer.json``, or a Hugging Face LM's or VLM's own), and ``encode_row`` turns a row's text into
the ids and labels the model reads. The tokenizers themselves are in ``kvideo.data.tokenizer_base``
(the interface, the ``encode_example`` conventions, the byte tokenizer) and
``kvideo.data.hf_tokenizers``; their names are importable from here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvideo.data.conversation import IGNORE_INDEX, VIDEO_PLACEHOLDER, Encoded, assemble
from kvideo.data.hf_tokenizers import ChatTokenizer, HFTokenizer
from kvideo.data.rows import ClipRow, Turn
from kvideo.data.tokenizer_base import ByteTokenizer, Tokenizer, TokenizerBase

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.model import ModelConfig

__all__ = [
    "IGNORE_INDEX",
    "ByteTokenizer",
    "ChatTokenizer",
    "Encoded",
    "HFTokenizer",
    "Tokenizer",
    "TokenizerBase",
    "build_tokenizer",
    "caption_turns",
    "encode_caption",
    "encode_row",
]


def encode_row(tokenizer: Tokenizer, row: ClipRow, prompt: str, max_len: int) -> Encoded:
    """A row's text as the model reads it: its conversation (``kvideo.data.conversation``), or
    ``prompt`` then its caption, with the visual tokens first (``encode_example``); with
    ``captions_as_conversations``, ``caption_turns``."""
    if row.turns:
        return assemble(tokenizer.conversation_pieces(row.turns), max_len, tokenizer.pad_id)
    return encode_caption(tokenizer, prompt, row.caption, max_len)


def caption_turns(prompt: str, caption: str) -> tuple[Turn, Turn]:
    """A caption row as the one-turn conversation ``captions_as_conversations`` tokenizers read:
    ``<video>`` then the prompt (the order of Qwen's own processor), answered by the caption."""
    return Turn("user", VIDEO_PLACEHOLDER + prompt), Turn("assistant", caption)


def encode_caption(tokenizer: Tokenizer, prompt: str, caption: str, max_len: int) -> Encoded:
    """A caption row's text (``encode_row``): also how candidate captions are scored."""
    if tokenizer.captions_as_conversations:
        return assemble(
            tokenizer.conversation_pieces(caption_turns(prompt, caption)), max_len, tokenizer.pad_id
        )
    input_ids, labels = tokenizer.encode_example(prompt, caption, max_len)
    context = min(len(tokenizer.context_ids(prompt)), max_len)
    target = sum(1 for label in labels if label != IGNORE_INDEX)  # every target token is a label
    return Encoded(input_ids, labels, 0, context, context + target)


def build_tokenizer(data: DataConfig, model: ModelConfig | None = None) -> Tokenizer:
    """The LM's own tokenizer for Hugging Face LMs (``model.family=hf``), the VLM's for
    ``model=pretrained``; otherwise ``data.tokenizer`` empty: ``ByteTokenizer``, else
    ``HFTokenizer`` on that path."""
    from kvideo.hf_folders import resolve_model_folder

    if model is not None and model.pretrained_parts:
        return ChatTokenizer(str(resolve_model_folder("model.lm_path", model.lm_path)))
    if model is not None and model.pretrained_model:
        from kvideo.hf_folders import video_vlm_geometry

        folder = resolve_model_folder("model.path", model.path)
        return ChatTokenizer(
            str(folder),
            field="model.path",
            captions_as_conversations=True,
            trust_remote_code=model.trust_remote_code,
            video_item=video_vlm_geometry("model.path", folder).video_item,
        )
    if not data.tokenizer:
        return ByteTokenizer()
    return HFTokenizer(data.tokenizer)
