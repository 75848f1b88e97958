"""``model.family=builtin`` (``model=tiny_vlm``, ``model=small_vlm``): kvideo's own ViT, projector
and causal LM, trained from scratch (``kvideo.model.vlm``). Its export is ``model.safetensors``,
the whole model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kvideo.config import KVideoConfig
from kvideo.data.tokenizer import Tokenizer
from kvideo.model.spec import ModelSizes, ModelSpec
from kvideo.model.vlm import build_builtin_model
from kvideo.registry import MODEL_FAMILIES


def build(cfg: Any, sizes: ModelSizes) -> nn.Module:
    return build_builtin_model(cfg, sizes)


def export(
    model: nn.Module,
    cfg: KVideoConfig,
    tokenizer: Tokenizer,
    out_dir: Path,
    trained: frozenset[str],
    *,
    merge_lora: bool = False,  # the builtin LM has no LoRA
) -> dict[str, Any]:
    from safetensors.torch import save_model

    save_model(model, str(out_dir / "model.safetensors"))  # handles the tied LM head
    return {"weights": "model.safetensors"}


BUILTIN = MODEL_FAMILIES.register("builtin")(
    ModelSpec(
        family="builtin",
        build=build,
        export=export,
    )
)
