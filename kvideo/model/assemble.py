"""A LLaVA-OneVision model folder assembled from a pretrained vision tower and a causal LM, with a
fresh projector: the exportable layout of ``model=hf_vlm``'s parts.

``model=hf_vlm`` joins the same parts through kvideo's own projector (pooling to
``model.tokens_per_frame``, frame-position, time and motion embeddings), which no transformers
class holds, so its export is the LM (or adapter) plus kvideo's projector weights. LLaVA-OneVision
is the transformers class whose architecture those parts already are: a tower, the
``mlp2x_gelu`` projector, an LM. Assembled as that class from the start, the folder trains with
``model=pretrained model.path=<folder>``, and its export is a model that
``AutoModelForImageTextToText`` and ``AutoProcessor`` load without kvideo.

What the layout fixes, against ``model=hf_vlm``'s options:

* each frame's patch grid is projected and then pooled 2 x 2 (bilinear), LLaVA-OneVision's own
  ``apply_pooling``: ``ceil(grid / 2)^2`` tokens per frame, in place of ``model.tokens_per_frame``;
* one learned newline token after the clip; no frame-position, time or motion embeddings
  (``model.time_embedding``, ``model.motion_tokens``), no LayerNorm before the projector;
* frames are squares of the tower's ``image_size`` (``video.resize=square``);
* the tower's hidden state ``vision_feature_layer`` (``model.vision_feature_layer``), its class
  token dropped (``vision_feature_select_strategy=default``) when it has one.

The chat template is the LM's own, behind a preamble that renders content lists (what
transformers' processors pass) as the strings the LM's template expects: a video item becomes
``<video>`` and a newline, as LLaVA writes it. ``<image>`` and ``<video>`` are added to the
tokenizer, and the LM's embeddings grow to hold them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kvideo.files import refuse_planted_link, write_text_atomic
from kvideo.hf_folders import TowerGeometry, image_statistics, tower_geometry
from kvideo.model.hf_parts import load_causal_lm, load_vision_model, quiet_transformers

VISION_TOKENS = ("<image>", "<video>")

# Content lists -> the strings an LM's own template renders (no whitespace between the tags, so
# the preamble itself renders nothing).
CONTENT_AS_TEXT = (
    "{% set normalized = namespace(messages=[]) %}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set parts = namespace(text='') %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}{% set parts.text = parts.text + '<video>\n' %}"
    "{% elif item['type'] == 'image' %}{% set parts.text = parts.text + '<image>\n' %}"
    "{% elif item['type'] == 'text' %}{% set parts.text = parts.text + item['text'] %}{% endif %}"
    "{% endfor %}{% set text = parts.text %}{% endif %}"
    "{% set normalized.messages = normalized.messages + [{'role': message['role'], 'content': text}] %}"
    "{% endfor %}"
    "{% set messages = normalized.messages %}"
)


def _prefix_tokens(tower: Any, image_size: int, patch_size: int, feature_layer: int) -> int:
    """How many tokens the tower's hidden state ``feature_layer`` has before its patch grid
    (CLIP's class token: 1, SigLIP: 0), found by running one blank frame."""
    with torch.no_grad():
        out = tower(pixel_values=torch.zeros(1, 3, image_size, image_size), output_hidden_states=True)
    return int(out.hidden_states[feature_layer].shape[1]) - (image_size // patch_size) ** 2


def _processor_files(
    out_dir: Path,
    *,
    image_size: int,
    statistics: tuple[tuple[float, ...], tuple[float, ...]],
    grid: int,
    strategy: str,
) -> None:
    """The image processor (transformers' PIL one, which runs without torchvision) and the
    files ``AutoProcessor`` reads for the video processor and the processor.

    The video processor's class needs torchvision to be built, so its file is written as the
    JSON it saves; the prepared GPU check loads this folder through ``AutoProcessor`` and compares
    its inputs with kvideo's (``benchmarks/gpu_check.py``)."""
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    size = {"height": image_size, "width": image_size}
    mean, std = statistics
    LlavaOnevisionImageProcessorPil(
        size=size, image_mean=list(mean), image_std=list(std), image_grid_pinpoints=[[image_size, image_size]]
    ).save_pretrained(out_dir)
    video = {
        "video_processor_type": "LlavaOnevisionVideoProcessor",
        "size": size,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "do_sample_frames": False,
    }
    processor = {
        "processor_class": "LlavaOnevisionProcessor",
        "image_token": "<image>",
        "video_token": "<video>",
        "num_image_tokens": grid * grid,
        "vision_feature_select_strategy": strategy,
        "vision_aspect_ratio": "anyres_max_9",
    }
    write_text_atomic(out_dir / "video_preprocessor_config.json", json.dumps(video, indent=2) + "\n")
    write_text_atomic(out_dir / "processor_config.json", json.dumps(processor, indent=2) + "\n")


def assemble_llava_onevision(
    vision_folder: Path, lm_folder: Path, out_dir: Path, *, feature_layer: int = -2, seed: int = 0
) -> dict[str, Any]:
    """Write the LLaVA-OneVision of the tower in ``vision_folder`` and the LM in ``lm_folder`` to
    ``out_dir`` (see the module docstring); the projector and the newline token are initialised
    with ``seed``. Returns what was assembled. ``ValueError`` (one line) for parts the layout
    cannot hold, or an ``out_dir`` that is not empty."""
    from transformers import AutoTokenizer

    refuse_planted_link(out_dir, "assembly folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty; assemble into a new folder")
    geometry = tower_geometry("--vision-path", vision_folder)
    mean, std = image_statistics("--vision-path", vision_folder)
    tokenizer: Any = AutoTokenizer.from_pretrained(lm_folder, local_files_only=True)
    if not tokenizer.chat_template:
        raise ValueError(
            f"--lm-path: {lm_folder}'s tokenizer has no chat template; the assembled model's "
            "processor renders conversations with it (use the LM's -Instruct version, or save one)"
        )
    tokenizer.add_tokens(list(VISION_TOKENS), special_tokens=True)
    tokenizer.chat_template = CONTENT_AS_TEXT + tokenizer.chat_template

    tower = load_vision_model(vision_folder, attn_implementation="sdpa")
    lm = load_causal_lm(lm_folder, attn_implementation="sdpa")
    prefix = _prefix_tokens(tower, geometry.image_size, geometry.patch_size, feature_layer)
    if prefix not in (0, 1):
        raise ValueError(
            f"--vision-path: {vision_folder}'s tower puts {prefix} tokens before its patch grid; "
            "LLaVA-OneVision drops at most one (a class token)"
        )
    with quiet_transformers():
        return _assembled(tower, lm, tokenizer, out_dir, geometry, (mean, std), feature_layer, prefix, seed)


def _assembled(
    tower: Any,
    lm: Any,
    tokenizer: Any,
    out_dir: Path,
    geometry: TowerGeometry,
    statistics: tuple[tuple[float, ...], tuple[float, ...]],
    feature_layer: int,
    prefix: int,
    seed: int,
) -> dict[str, Any]:
    """``assemble_llava_onevision`` once the parts are loaded and checked."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.modeling_llava_onevision import (
        LlavaOnevisionMultiModalProjector,
    )

    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer))
    tied = bool(getattr(lm.config, "tie_word_embeddings", False))
    config = LlavaOnevisionConfig(
        vision_config=tower.config.to_dict(),
        text_config=lm.config.to_dict(),
        image_token_index=int(tokenizer.convert_tokens_to_ids("<image>")),
        video_token_index=int(tokenizer.convert_tokens_to_ids("<video>")),
        vision_feature_select_strategy="default" if prefix else "full",
        vision_feature_layer=feature_layer,
        image_grid_pinpoints=[[geometry.image_size, geometry.image_size]],
        tie_word_embeddings=tied,
    )
    with torch.device("meta"):  # every part but the projector and the newline comes loaded
        model = LlavaOnevisionForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = lm.base_model
    model.lm_head = lm.get_output_embeddings()
    torch.manual_seed(seed)
    model.model.multi_modal_projector = LlavaOnevisionMultiModalProjector(config)  # nn.Linear's init
    width = int(lm.config.hidden_size)
    model.model.image_newline = nn.Parameter(torch.randn(width) / math.sqrt(width))  # as the class does
    if lm.generation_config is not None:
        model.generation_config = lm.generation_config
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"assembling left {left[:3]} unset")  # a transformers layout change

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    grid = geometry.image_size // geometry.patch_size
    _processor_files(
        out_dir,
        image_size=geometry.image_size,
        statistics=statistics,
        grid=grid,
        strategy=config.vision_feature_select_strategy,
    )
    return {
        "out": str(out_dir),
        "model_type": "llava_onevision",
        "frame_size": geometry.image_size,
        "tokens_per_frame": math.ceil(grid / 2) ** 2,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "vision_feature_layer": feature_layer,
        "vocab_size": len(tokenizer),
        "seed": seed,
    }
