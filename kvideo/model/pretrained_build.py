"""Building ``model=pretrained``'s model: the released VLM of ``model.path`` loaded offline
(``AutoModelForImageTextToText``), LoRA on its LM when asked, its tokenizer for the families that
write time as text, and activation checkpointing, behind ``kvideo.model.pretrained_vlm``'s
interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kvideo.config.model import ModelConfig
from kvideo.data.picture_tiles import image_processor
from kvideo.hf_folders import resolve_model_folder, video_vlm_geometry, vlm_part_of
from kvideo.model.blocks import recompute_in_backward, transformer_blocks
from kvideo.model.hf_parts import quiet_transformers
from kvideo.model.lora_rank import check_lora_rank
from kvideo.model.pretrained_vlm import PretrainedVLM

part_of = vlm_part_of  # the family's ``ModelSpec.part_of``


def load_pretrained_vlm(folder: Path, cfg: ModelConfig) -> Any:
    """``AutoModelForImageTextToText`` from ``folder``, offline, in fp32 (AdamW's master weights;
    autocast runs the matmuls in bf16 on CUDA); safetensors only unless
    ``model.allow_pickled_weights``."""
    from transformers import AutoModelForImageTextToText

    with quiet_transformers():
        return AutoModelForImageTextToText.from_pretrained(
            folder,
            local_files_only=True,
            dtype=torch.float32,
            attn_implementation=cfg.attn_implementation,
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=None if cfg.allow_pickled_weights else True,
        )


def lm_lora_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """The full names of the LM's linear layers whose last name is in ``targets``: Qwen's vision
    blocks have ``gate_proj`` / ``up_proj`` / ``down_proj`` too, and LoRA belongs on the LM."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets and part_of(name) == "lm"
    ]


def add_vlm_lora(model: nn.Module, cfg: ModelConfig) -> Any:
    """``model`` wrapped by peft, LoRA of ``model.lora_rank`` on the LM's ``model.lora_targets``;
    peft freezes every other weight, and ``model.freeze`` decides about the adapters."""
    from peft import LoraConfig, get_peft_model

    names = lm_lora_targets(model, list(cfg.lora_targets))
    if not names:
        raise ValueError(
            f"model.lora_targets {list(cfg.lora_targets)} name no linear layer of the LM in model.path "
            f"({type(model).__name__})"
        )
    check_lora_rank(cfg.lora_rank, ((name, model.get_submodule(name)) for name in names))
    config = LoraConfig(
        r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=names
    )
    return get_peft_model(model, config)


def build_pretrained_vlm(cfg: ModelConfig, max_tokens_per_row: int | None = None) -> PretrainedVLM:
    """The model of ``model.path`` with LoRA and activation checkpointing as ``cfg`` says, packing
    rows of ``max_tokens_per_row`` (None = padded rows; ``ModelSizes``)."""
    folder = resolve_model_folder("model.path", cfg.path)
    geometry = video_vlm_geometry("model.path", folder)
    hf = load_pretrained_vlm(folder, cfg)
    if cfg.lora_rank:
        hf = add_vlm_lora(hf, cfg)
    tokenizer = None
    if geometry.timestamps_as_text or geometry.frames_as_images:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            folder, local_files_only=True, trust_remote_code=cfg.trust_remote_code
        )
    pictures = image_processor(str(folder)) if geometry.model_type == "smolvlm" else None
    model = PretrainedVLM(hf, geometry, tokenizer, max_tokens_per_row, pictures)
    if cfg.activation_checkpointing:
        for block in transformer_blocks(model):
            recompute_in_backward(block)
    return model
