"""Export a trained model so it loads outside kvideo, in Hugging Face's formats.

``<out>/`` holds the family's own files (its ``ModelSpec.export``: ``kvideo.model.families``)
and always ``config.yaml`` (the run's config) and ``export.json`` (what is where, the step, the
family).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from kvideo.config import KVideoConfig
from kvideo.data.tokenizer import Tokenizer
from kvideo.files import refuse_planted_link, write_text_atomic
from kvideo.model.spec import model_spec

EXPORT_INFO = "export.json"


def export_model(
    model: nn.Module,
    cfg: KVideoConfig,
    tokenizer: Tokenizer,
    out_dir: Path,
    *,
    step: int,
    trained: frozenset[str],
    merge_lora: bool = False,
) -> dict[str, Any]:
    """Write ``model`` to ``out_dir`` (see the module docstring); returns ``export.json``'s content.

    ``trained``: the parameters that trained at some step (a frozen tower is not copied).
    ``merge_lora``: LoRA adapters merged into their weights (the model is changed in place:
    for a model that is not used afterwards), else written as adapters. A folder holding a
    symbolic link is refused (``ValueError``) before anything is written: ``save_pretrained``
    writes through links.
    """
    refuse_planted_link(out_dir, "export folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"family": cfg.model.family, "step": step, "model": cfg.model.name}
    info.update(
        model_spec(cfg.model.family).export(model, cfg, tokenizer, out_dir, trained, merge_lora=merge_lora)
    )
    write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    write_text_atomic(out_dir / EXPORT_INFO, json.dumps(info, indent=2) + "\n")
    return info
