"""Export a trained model so it loads outside kvideo, in Hugging Face's formats.

``<out>/`` holds, for ``model.family=hf``:

* ``lm/``: the LM after training (``save_pretrained``) with its tokenizer, or with LoRA
  ``lm_adapter/``: the peft adapter (``PeftModel.from_pretrained(base_lm, "lm_adapter")``), whose
  ``adapter_config.json`` names the base LM folder;
* ``vision/``: the tower (``save_pretrained`` + its ``preprocessor_config.json``) when any of it
  trained; otherwise ``export.json`` points at the original ``model.vision_path``;
* ``projector.safetensors`` + ``projector.json``: kvideo's projector (its shape and options);

and for the builtin models ``model.safetensors`` (the whole model). Always ``config.yaml`` (the
run's config) and ``export.json`` (what is where, the step, the family).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from kvideo.config import KVideoConfig
from kvideo.config.pretrained import PREPROCESSOR_FILE, resolve_model_folder
from kvideo.data.tokenizer import Tokenizer
from kvideo.files import write_text_atomic

EXPORT_INFO = "export.json"


def export_model(
    model: nn.Module,
    cfg: KVideoConfig,
    tokenizer: Tokenizer,
    out_dir: Path,
    *,
    step: int,
    trained: frozenset[str],
) -> dict[str, Any]:
    """Write ``model`` to ``out_dir`` (see the module docstring); returns ``export.json``'s content.

    ``trained``: the parameters that trained at some step (a frozen tower is not copied).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"family": cfg.model.family, "step": step, "model": cfg.model.name}
    if cfg.model.family == "hf":
        from kvideo.model.hf_vlm import quiet_transformers

        with quiet_transformers():
            info.update(_export_hf(model, cfg, tokenizer, out_dir, trained))
    else:
        from safetensors.torch import save_model

        save_model(model, str(out_dir / "model.safetensors"))  # handles the tied LM head
        info["weights"] = "model.safetensors"
    write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    write_text_atomic(out_dir / EXPORT_INFO, json.dumps(info, indent=2) + "\n")
    return info


def _export_hf(
    model: nn.Module, cfg: KVideoConfig, tokenizer: Tokenizer, out_dir: Path, trained: frozenset[str]
) -> dict[str, Any]:
    from safetensors.torch import save_file

    info: dict[str, Any] = {}
    lm: Any = model.lm
    save_tokenizer = getattr(tokenizer, "save", None)
    if cfg.model.lora_rank:
        lm.save_pretrained(out_dir / "lm_adapter")
        info["lm_adapter"] = "lm_adapter"
        info["base_lm"] = str(resolve_model_folder("model.lm_path", cfg.model.lm_path))
        if save_tokenizer is not None:
            save_tokenizer(out_dir / "lm_adapter")
    else:
        lm.save_pretrained(out_dir / "lm")
        info["lm"] = "lm"
        if save_tokenizer is not None:
            save_tokenizer(out_dir / "lm")
    vision_folder = resolve_model_folder("model.vision_path", cfg.model.vision_path)
    tower: Any = model.vision
    if any(name.startswith("vision.") for name in trained):
        tower.model.save_pretrained(out_dir / "vision")
        shutil.copyfile(vision_folder / PREPROCESSOR_FILE, out_dir / "vision" / PREPROCESSOR_FILE)
        info["vision"] = "vision"
    else:
        info["vision"] = str(vision_folder)  # frozen all run: the original tower
    projector: Any = model.projector
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()},
        str(out_dir / "projector.safetensors"),
    )
    spec = {
        "in_width": tower.out_width,
        "out_width": int(lm.get_input_embeddings().embedding_dim),
        "tokens_per_frame": cfg.model.tokens_per_frame,
        "max_frames": cfg.video.max_frames,
        "motion_tokens": cfg.model.motion_tokens,
        "time_embedding": cfg.model.time_embedding,
        "kind": cfg.model.projector,
        "vision_feature_layer": cfg.model.vision_feature_layer,
        "sequence": "[visual tokens of every frame, frame-major | chat-formatted text]",
    }
    write_text_atomic(out_dir / "projector.json", json.dumps(spec, indent=2) + "\n")
    info["projector"] = "projector.safetensors"
    return info
