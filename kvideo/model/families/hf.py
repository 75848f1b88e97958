"""``model.family=hf`` (``model=hf_vlm``): a pretrained Hugging Face vision tower and causal LM,
joined by kvideo's projector (``kvideo.model.hf_vlm``).

Its export folder holds:

* ``lm/``: the LM after training (``save_pretrained``) with its tokenizer, or with LoRA
  ``lm_adapter/``: the peft adapter (``PeftModel.from_pretrained(base_lm, "lm_adapter")``), whose
  ``adapter_config.json`` names the base LM folder;
* ``vision/``: the tower (``save_pretrained`` + its ``preprocessor_config.json``) when any of it
  trained; otherwise ``export.json`` points at the original ``model.vision_path``;
* ``projector.safetensors`` + ``projector.json``: kvideo's projector (its shape and options).

kvideo's projector is no transformers class. For an export that is one model, the same parts are
assembled as a LLaVA-OneVision (``python -m kvideo.assemble``, ``kvideo.model.assemble``) and
trained as ``model=pretrained``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from kvideo.config import KVideoConfig
from kvideo.data.tokenizer import Tokenizer
from kvideo.files import write_text_atomic
from kvideo.hf_folders import PREPROCESSOR_FILE, resolve_model_folder
from kvideo.model.hf_parts import quiet_transformers
from kvideo.model.hf_vlm import build_hf_model
from kvideo.model.spec import ModelSpec
from kvideo.registry import MODEL_FAMILIES


@quiet_transformers()
def export(
    model: nn.Module,
    cfg: KVideoConfig,
    tokenizer: Tokenizer,
    out_dir: Path,
    trained: frozenset[str],
    *,
    merge_lora: bool = False,
) -> dict[str, Any]:
    from safetensors.torch import save_file

    info: dict[str, Any] = {}
    lm: Any = model.lm
    save_tokenizer = getattr(tokenizer, "save", None)
    if cfg.model.lora_rank and merge_lora:
        lm = lm.merge_and_unload()  # the export's own model: the run's is not used after this
        info["lora"] = "merged"
    if cfg.model.lora_rank and not merge_lora:
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


HF = MODEL_FAMILIES.register("hf")(
    ModelSpec(
        family="hf",
        build=build_hf_model,
        export=export,
    )
)
