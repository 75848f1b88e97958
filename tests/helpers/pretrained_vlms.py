"""Tiny released-VLM folders, made the way a user's are: transformers' own config classes, random
weights, ``save_pretrained`` of the model, its tokenizer and its image processor. Loading them
runs the real offline ``AutoModelForImageTextToText.from_pretrained`` path.

The tokenizer is ``hf_models.save_tokenizer``'s (the sample corpus's words) plus the family's
vision tokens, and its chat template is the family's released one: content lists, a video item
rendered where the processor expects it (LLaVA-OneVision's and SmolVLM2's render string content
as nothing, as the released ones do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.hf_models import save_tokenizer

QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>")
QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VLM_TYPES = (*QWEN_TYPES, "llava_onevision", "llava_next_video", "smolvlm", "internvl")
LLAVA_TOKENS = ("<image>", "<video>")
SMOLVLM_TOKENS = ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")
INTERNVL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")
# LLaVA's anyres grids (model and image processor alike): a picture is its whole and up to 2 tiles.
LLAVA_PINPOINTS = [[56, 56], [56, 112], [112, 56]]
# The side of a frame whose patches tile it: 14 px patches merged 2 x 2 (Qwen2-VL, Qwen2.5-VL),
# 16 px for Qwen3-VL.
FRAME_SIDE = {
    "qwen2_vl": 28,
    "qwen2_5_vl": 28,
    "qwen3_vl": 32,
    "llava_onevision": 28,
    "llava_next_video": 28,
    "smolvlm": 28,
    "internvl": 28,
}

# Qwen2-VL's template, its system turn left out: strings as they are, content lists item by item.
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# llava-hf's LLaVA-OneVision template (content lists only: images, videos, then the text items)
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# llava-hf's LLaVA-NeXT-Video template (content lists only; Vicuna's "USER: ... ASSISTANT:", no
# end-of-turn token: kvideo ends each answer with EOS, as LLaVA's own recipe does)
LLAVA_NEXT_VIDEO_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# InternVL3-hf's template: ChatML, strings as they are, content lists item by item
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
# SmolVLM2's template (content lists only)
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _family_tokenizer(folder: Path, tokens: tuple[str, ...], template: str, **special: str) -> Any:
    """``save_tokenizer``'s, with ``tokens`` added as special tokens and the family's template."""
    from transformers import AutoTokenizer

    save_tokenizer(folder)
    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": list(tokens), **special})
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return tokenizer


def _lm_config(tokenizer: Any, width: int, **fields: Any) -> dict[str, Any]:
    """The LM every tiny VLM has: 2 layers ``width`` wide, 4 heads sharing 2 key/value heads,
    the tokenizer's special ids; ``fields`` add or replace keys."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **fields,
    }


def _tower_config(width: int, **fields: Any) -> dict[str, Any]:
    """The vision tower of the fixed-size families: 2 layers of 2 heads, half the LM's width,
    56 px frames in 14 px patches (a 4 x 4 grid); ``fields`` add keys."""
    return {
        "hidden_size": width // 2,
        "intermediate_size": width,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 56,
        "patch_size": 14,
        **fields,
    }


def _save_model(model: Any, tokenizer: Any, folder: Path, **generation: Any) -> None:
    """``model`` saved with the tokenizer's EOS and pad ids in its generation config (and
    ``generation``'s other settings)."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    for name, value in generation.items():
        setattr(model.generation_config, name, value)
    model.save_pretrained(folder)


def save_tiny_qwen_vl(
    folder: Path, model_type: str = "qwen2_5_vl", *, width: int = 64, max_positions: int = 1024
) -> Path:
    """A 2-layer Qwen2.5-VL (or Qwen2-VL, Qwen3-VL): a ``width``-wide LM, a tower half as wide,
    14 px patches (Qwen3-VL: 16 px) merged 2 x 2, 2-frame temporal patches."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = _family_tokenizer(folder, QWEN_VISION_TOKENS, QWEN_TEMPLATE)
    ids = {token: int(tokenizer.convert_tokens_to_ids(token)) for token in QWEN_VISION_TOKENS}
    half = width // 4 // 2  # rotary frequencies per head (4 heads)
    text = _lm_config(
        tokenizer,
        width,
        max_position_embeddings=max_positions,
        # time, height, width sections of each head's rotary frequencies (Qwen's 16/24/24 of 64)
        rope_scaling={"type": "mrope", "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8]},
        tie_word_embeddings=True,
        bos_token_id=None,
    )
    tokens: dict[str, Any] = {
        "video_token_id": ids["<|video_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    _save_model(_qwen_model(model_type, width, text, tokens), tokenizer, folder, bos_token_id=None)
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
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = _family_tokenizer(folder, LLAVA_TOKENS, LLAVA_ONEVISION_TEMPLATE)
    config = LlavaOnevisionConfig(
        vision_config=_tower_config(width, model_type="siglip_vision_model"),
        text_config=_lm_config(tokenizer, width, model_type="qwen2", tie_word_embeddings=True),
        image_token_index=int(tokenizer.convert_tokens_to_ids("<image>")),
        video_token_index=int(tokenizer.convert_tokens_to_ids("<video>")),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=LLAVA_PINPOINTS,
        tie_word_embeddings=True,
    )
    _save_model(LlavaOnevisionForConditionalGeneration(config), tokenizer, folder)
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": 56, "width": 56},
        image_grid_pinpoints=LLAVA_PINPOINTS,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor.save_pretrained(folder)
    return folder


def save_tiny_llava_next_video(folder: Path, *, width: int = 64) -> Path:
    """A LLaVA-NeXT-Video: a 2-layer CLIP tower (56 px frames, 14 px patches and a class token,
    which the model drops: 4 x 4 patches average-pooled to 2 x 2 tokens per frame), the 2-layer
    MLP projector, a 2-layer Llama LM ``width`` wide (Vicuna's kind)."""
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = _family_tokenizer(folder, LLAVA_TOKENS, LLAVA_NEXT_VIDEO_TEMPLATE)
    config = LlavaNextVideoConfig(
        vision_config=_tower_config(width, model_type="clip_vision_model"),
        text_config=_lm_config(tokenizer, width, model_type="llama"),
        image_token_index=int(tokenizer.convert_tokens_to_ids("<image>")),
        video_token_index=int(tokenizer.convert_tokens_to_ids("<video>")),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_stride=2,
        spatial_pool_mode="average",
        image_grid_pinpoints=LLAVA_PINPOINTS,
    )
    _save_model(LlavaNextVideoForConditionalGeneration(config), tokenizer, folder)
    LlavaNextImageProcessorPil(
        size={"height": 56, "width": 56},
        crop_size={"height": 56, "width": 56},
        image_grid_pinpoints=LLAVA_PINPOINTS,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    ).save_pretrained(folder)
    return folder


def save_tiny_smolvlm(folder: Path, *, width: int = 64) -> Path:
    """A SmolVLM2: a 2-layer SmolVLM vision tower (56 px frames, 14 px patches: 4 x 4 patches
    pixel-shuffled 2 x 2 to 4 tokens per frame), its connector, a 2-layer Llama LM ``width``
    wide; ``<end_of_utterance>`` ends its turns and is its EOS, as in SmolVLM2's tokenizer."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    tokenizer = _family_tokenizer(folder, SMOLVLM_TOKENS, SMOLVLM_TEMPLATE, eos_token="<end_of_utterance>")
    config = SmolVLMConfig(
        vision_config=_tower_config(width),
        text_config=_lm_config(tokenizer, width, model_type="llama", bos_token_id=None),
        scale_factor=2,
        image_token_id=int(tokenizer.convert_tokens_to_ids("<image>")),
    )
    _save_model(SmolVLMForConditionalGeneration(config), tokenizer, folder, bos_token_id=None)
    SmolVLMImageProcessorPil(
        size={"longest_edge": 112},  # pictures: up to 2 x 2 tiles and the whole
        max_image_size={"longest_edge": 56},
        do_image_splitting=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    ).save_pretrained(folder)
    return folder


def save_tiny_internvl(folder: Path, *, width: int = 64) -> Path:
    """An InternVL3: a 2-layer InternViT tower (56 px frames, 14 px patches: 4 x 4 patches
    pixel-shuffled 2 x 2 to 4 tokens per frame), its MLP projector, a 2-layer Qwen2 LM ``width``
    wide."""
    from transformers import AutoTokenizer, InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    _family_tokenizer(folder, INTERNVL_TOKENS, INTERNVL_TEMPLATE)
    # named as InternVL3-hf's tokenizer names them (its processor reads these attributes)
    names = ("start_image_token", "end_image_token", "context_image_token", "video_token")
    named = dict(zip(names, INTERNVL_TOKENS, strict=True))
    tokenizer: Any = AutoTokenizer.from_pretrained(folder, extra_special_tokens=named)
    tokenizer.save_pretrained(folder)
    tower = _tower_config(width, model_type="internvl_vision", image_size=[56, 56], patch_size=[14, 14])
    config = InternVLConfig(
        vision_config=tower,
        text_config=_lm_config(tokenizer, width, model_type="qwen2"),
        image_token_id=int(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")),
        image_seq_length=4,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
    )
    _save_model(InternVLForConditionalGeneration(config), tokenizer, folder)
    GotOcr2ImageProcessorPil(  # pictures: up to 6 tiles and the thumbnail (its processor crops)
        size={"height": 56, "width": 56},
        crop_to_patches=False,
        max_patches=6,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    ).save_pretrained(folder)
    return folder


def save_tiny_vlm(folder: Path, model_type: str) -> Path:
    """``save_tiny_qwen_vl``, ``save_tiny_llava_onevision``, ``save_tiny_llava_next_video``,
    ``save_tiny_smolvlm`` or ``save_tiny_internvl`` by ``model_type``."""
    if model_type == "llava_onevision":
        return save_tiny_llava_onevision(folder)
    if model_type == "llava_next_video":
        return save_tiny_llava_next_video(folder)
    if model_type == "smolvlm":
        return save_tiny_smolvlm(folder)
    if model_type == "internvl":
        return save_tiny_internvl(folder)
    return save_tiny_qwen_vl(folder, model_type)


def pretrained_cli_overrides(folder: Path, *, frame_size: int = 56) -> list[str]:
    """``train.py`` overrides that select the tiny VLM at a square its patches tile."""
    return ["model=pretrained", f"model.path={folder}", f"video.frame_size={frame_size}"]
