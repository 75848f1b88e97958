"""Tiny released-VLM folders, made the way a user's are: transformers' own config classes, random
weights, ``save_pretrained`` of the model, its tokenizer and its image processor. Loading them
runs the real offline ``AutoModelForImageTextToText.from_pretrained`` path.

The tokenizer is ``hf_models.save_tokenizer``'s (the sample corpus's words, ChatML) plus the
vision tokens of Qwen's vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.hf_models import save_tokenizer

QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>")
QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VLM_TYPES = (*QWEN_TYPES, "llava_onevision")
LLAVA_TOKENS = ("<image>", "<video>")
# The side of a frame whose patches tile it: 14 px patches merged 2 x 2 (Qwen2-VL, Qwen2.5-VL),
# 16 px for Qwen3-VL.
FRAME_SIDE = {"qwen2_vl": 28, "qwen2_5_vl": 28, "qwen3_vl": 32, "llava_onevision": 28}


def save_tiny_qwen_vl(
    folder: Path, model_type: str = "qwen2_5_vl", *, width: int = 64, max_positions: int = 1024
) -> Path:
    """A 2-layer Qwen2.5-VL (or Qwen2-VL, Qwen3-VL): a ``width``-wide LM, a tower half as wide,
    14 px patches (Qwen3-VL: 16 px) merged 2 x 2, 2-frame temporal patches."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    save_tokenizer(folder)
    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_VISION_TOKENS)})
    tokenizer.save_pretrained(folder)
    ids = {token: int(tokenizer.convert_tokens_to_ids(token)) for token in QWEN_VISION_TOKENS}
    half = width // 4 // 2  # rotary frequencies per head (4 heads)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": max_positions,
        # time, height, width sections of each head's rotary frequencies (Qwen's 16/24/24 of 64)
        "rope_scaling": {"type": "mrope", "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8]},
        "tie_word_embeddings": True,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
    }
    tokens: dict[str, Any] = {
        "video_token_id": ids["<|video_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    model = _qwen_model(model_type, width, text, tokens)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    if model_type == "qwen3_vl":  # Qwen3-VL's published processor settings
        Qwen2VLImageProcessorPil(patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
            folder
        )
    else:
        Qwen2VLImageProcessorPil().save_pretrained(folder)
    return folder


def _qwen_model(model_type: str, width: int, text: dict[str, Any], tokens: dict[str, Any]) -> Any:
    # The tower all three share: 2 blocks of 2 heads, 2 x 2 merges of 2-frame temporal patches;
    # Qwen2.5-VL and Qwen3-VL name its widths alike.
    tower = {"depth": 2, "num_heads": 2, "spatial_merge_size": 2, "temporal_patch_size": 2}
    widths = {"hidden_size": width // 2, "intermediate_size": width, "out_hidden_size": width}
    if model_type == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = {**tower, **widths, "patch_size": 14, "window_size": 56, "fullatt_block_indexes": [1]}
        config_25 = Qwen2_5_VLConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens
        )
        return Qwen2_5_VLForConditionalGeneration(config_25)
    if model_type == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = {**tower, "embed_dim": width // 2, "hidden_size": width, "mlp_ratio": 2, "patch_size": 14}
        config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens)
        return Qwen2VLForConditionalGeneration(config)
    if model_type == "qwen3_vl":
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        text = {**text, "head_dim": width // 4}
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5e5,
            "mrope_section": text.pop("rope_scaling")["mrope_section"],
            "mrope_interleaved": True,
        }
        vision = {
            **tower,
            **widths,
            "patch_size": 16,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
        config_3 = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens)
        return Qwen3VLForConditionalGeneration(config_3)
    raise ValueError(f"no tiny {model_type!r}; expected one of {QWEN_TYPES}")


def save_tiny_llava_onevision(folder: Path, *, width: int = 64) -> Path:
    """A LLaVA-OneVision: a 2-layer SigLIP tower (56 px frames, 14 px patches: 4 x 4 patches pooled
    to 2 x 2 tokens per frame), the 2-layer MLP projector, a 2-layer Qwen2 LM ``width`` wide."""
    from transformers import AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    save_tokenizer(folder)
    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": list(LLAVA_TOKENS)})
    tokenizer.save_pretrained(folder)
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": width // 2,
        "intermediate_size": width,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 56,
        "patch_size": 14,
    }
    text = {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=int(tokenizer.convert_tokens_to_ids("<image>")),
        video_token_index=int(tokenizer.convert_tokens_to_ids("<video>")),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[56, 56]],
        tie_word_embeddings=True,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": 56, "width": 56}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor.save_pretrained(folder)
    return folder


def save_tiny_vlm(folder: Path, model_type: str) -> Path:
    """``save_tiny_qwen_vl`` or ``save_tiny_llava_onevision`` by ``model_type``."""
    if model_type == "llava_onevision":
        return save_tiny_llava_onevision(folder)
    return save_tiny_qwen_vl(folder, model_type)


def pretrained_cli_overrides(folder: Path, *, frame_size: int = 56) -> list[str]:
    """``train.py`` overrides that select the tiny VLM at a square its patches tile."""
    return ["model=pretrained", f"model.path={folder}", f"video.frame_size={frame_size}"]
