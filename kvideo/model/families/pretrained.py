"""``model.family=pretrained`` (``model=pretrained``): a released video VLM from ``model.path``,
finetuned whole or in parts (``kvideo.model.pretrained_vlm``).

Its export folder is a transformers model folder: ``AutoModelForImageTextToText.from_pretrained``
and ``AutoTokenizer.from_pretrained`` load it with no kvideo installed, and ``AutoProcessor``
where the model's video processor can load (it needs torchvision). It holds:

* the weights and ``config.json`` (``save_pretrained``), or with LoRA the peft adapter
  (``adapter_config.json`` names the base folder, which transformers loads first), or with
  ``python -m kvideo.export --merge-lora`` the merged model;
* the tokenizer, its chat template, and the processor files of ``model.path``
  (``preprocessor_config.json``, ``video_preprocessor_config.json``, ...);
* ``CAPTION.md``: how to caption a video with transformers alone, inputs included.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from kvideo.config import KVideoConfig
from kvideo.data.tokenizer import Tokenizer
from kvideo.files import write_text_atomic
from kvideo.hf_folders import VideoVlmGeometry, resolve_model_folder
from kvideo.model.hf_parts import quiet_transformers
from kvideo.model.pretrained_build import build_pretrained_vlm, part_of
from kvideo.model.spec import ModelSizes, ModelSpec
from kvideo.registry import MODEL_FAMILIES

# What a processor reads besides the tokenizer; copied from model.path as they are.
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "chat_template.jinja",
    "chat_template.json",
)

RECIPE_HEAD = """# Captioning a video with this folder, transformers only

A `{model_type}` model exported by kvideo. No kvideo is needed:

```python
import json, torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

folder = {folder!r}  # this folder
model = AutoModelForImageTextToText.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
pre = json.load(open(f"{{folder}}/preprocessor_config.json"))
"""

QWEN_VIDEO_INPUTS = '''p, m, tp = pre["patch_size"], pre["merge_size"], pre["temporal_patch_size"]

def video_inputs(frames, times):
    """frames: (T, H, W, 3) uint8, sampled as in training, H and W multiples of p * m
    (Qwen's smart_resize); times: each frame's display time in seconds. Where torchvision
    works, AutoProcessor(videos=...) does the same."""
    mean = torch.tensor(pre["image_mean"]).view(3, 1, 1)
    std = torch.tensor(pre["image_std"]).view(3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    if -len(x) % tp:
        x = torch.cat([x, x[-1:].expand(-len(x) % tp, -1, -1, -1)])
    t, (h, w) = len(x) // tp, (x.shape[2] // p, x.shape[3] // p)
    x = x.reshape(t, tp, 3, h // m, m, p, w // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    inputs = {{"pixel_values_videos": x.reshape(t * h * w, -1), "video_grid_thw": torch.tensor([[t, h, w]])}}
    if model.config.model_type == "qwen2_5_vl":  # the time one temporal patch spans
        spacing = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
        inputs["second_per_grid_ts"] = torch.tensor([(spacing if spacing > 0 else 1.0) * tp])
    return inputs, video_ids(t, h * w // (m * m), list(times))

def video_ids(t, per_group, times):
    """The video's ids in the text: Qwen3-VL puts each temporal patch after its time as text."""
    c = model.config
    if c.model_type != "qwen3_vl":
        return [c.vision_start_token_id] + [c.video_token_id] * (t * per_group) + [c.vision_end_token_id]
    times = (times or [0.0]) + [(times or [0.0])[-1]] * (t * tp - len(times or [0.0]))
    ids = []
    for g in range(t):
        stamp = (times[g * tp] + times[(g + 1) * tp - 1]) / 2
        ids += tokenizer.encode(f"<{{stamp:.1f}} seconds>", add_special_tokens=False)
        ids += [c.vision_start_token_id] + [c.video_token_id] * per_group + [c.vision_end_token_id]
    return ids

'''

LLAVA_ONEVISION_VIDEO_INPUTS = '''def video_inputs(frames, times):
    """frames: (T, H, W, 3) uint8, sampled as in training, squares of the tower's image_size;
    times are not used (LLaVA-OneVision takes frames in order). Where torchvision works,
    AutoProcessor(videos=...) does the same."""
    mean = torch.tensor(pre["image_mean"]).view(3, 1, 1)
    std = torch.tensor(pre["image_std"]).view(3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    vision = model.config.vision_config
    side = -(-(vision.image_size // vision.patch_size) // 2)  # the patch grid, pooled 2 x 2
    return {{"pixel_values_videos": x[None]}}, [model.config.video_token_id] * (len(x) * side * side + 1)

'''

LLAVA_NEXT_VIDEO_VIDEO_INPUTS = '''def video_inputs(frames, times):
    """frames: (T, H, W, 3) uint8, sampled as in training, squares of the tower's image_size;
    times are not used (LLaVA-NeXT-Video takes frames in order). Where torchvision works,
    AutoProcessor(videos=...) does the same."""
    mean = torch.tensor(pre["image_mean"]).view(3, 1, 1)
    std = torch.tensor(pre["image_std"]).view(3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    c = model.config
    side = c.vision_config.image_size // c.vision_config.patch_size // c.spatial_pool_stride
    return {{"pixel_values_videos": x[None]}}, [c.video_token_id] * (len(x) * side * side)

'''

SMOLVLM_VIDEO_INPUTS = '''from datetime import timedelta
from num2words import num2words  # SmolVLM's processor needs it too

def video_inputs(frames, times):
    """frames: (T, H, W, 3) uint8, sampled as in training, squares of the tower's image_size;
    times: each frame's display time in seconds. The video is text around one image per frame,
    as SmolVLMProcessor writes it. Where torchvision works, AutoProcessor(videos=...) does the same."""
    mean = torch.tensor(pre["image_mean"]).view(3, 1, 1)
    std = torch.tensor(pre["image_std"]).view(3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    c = model.config
    per_frame = (c.vision_config.image_size // c.vision_config.patch_size // c.scale_factor) ** 2
    image = "<fake_token_around_image><global-img>" + "<image>" * per_frame + "<fake_token_around_image>"
    length = timedelta(seconds=int(times[-1]))
    text = "You are provided the following series of "
    text += f"{{num2words(len(times))}} frames from a {{length}} [H:MM:SS] video.\\n"
    for t in times:
        text += f"\\nFrame from {{int(t // 60):02d}}:{{int(t % 60):02d}}:" + image
    return {{"pixel_values": x[None]}}, text + "\\n\\n"

'''

INTERNVL_VIDEO_INPUTS = '''def video_inputs(frames, times):
    """frames: (T, H, W, 3) uint8, sampled as in training, squares of the tower's image_size;
    times are not used (InternVL3 numbers its frames). The video is text around one image per
    frame, as InternVLProcessor writes it. Where torchvision works, AutoProcessor(videos=...)
    does the same."""
    mean = torch.tensor(pre["image_mean"]).view(3, 1, 1)
    std = torch.tensor(pre["image_std"]).view(3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    c = model.config
    size, patch = c.vision_config.image_size, c.vision_config.patch_size
    side = (size[0] if isinstance(size, (list, tuple)) else size) // (
        patch[0] if isinstance(patch, (list, tuple)) else patch
    )
    image = "<img>" + "<IMG_CONTEXT>" * int((side * c.downsample_ratio) ** 2) + "</img>"
    return {{"pixel_values": x}}, "\\n".join(f"Frame{{i + 1}}: {{image}}" for i in range(len(x)))

'''

RECIPE_TAIL = '''def model_inputs(frames, times, prompt={prompt!r}):
    """The chat template's user turn (the video, then the prompt) and the assistant header, with
    the video where the template renders it ({video_item!r}), as the model trained."""
    video, video_part = video_inputs(frames, times)
    content = [{{"type": "video"}}, {{"type": "text", "text": prompt}}]
    text = tokenizer.apply_chat_template(
        [{{"role": "user", "content": content}}], add_generation_prompt=True, tokenize=False
    )
    before, after = text.split({video_item!r})
    if isinstance(video_part, str):  # text around image tokens: tokenized with its neighbours
        ids = tokenizer.encode(before + video_part + after, add_special_tokens=False)
    else:
        ids = (
            tokenizer.encode(before, add_special_tokens=False)
            + video_part
            + tokenizer.encode(after, add_special_tokens=False)
        )
    ids = torch.tensor([ids])
    inputs = {{"input_ids": ids, "attention_mask": torch.ones_like(ids), **video}}
    if model.config.model_type.startswith("qwen"):  # lets Qwen place its multimodal rope positions
        inputs["mm_token_type_ids"] = (ids == model.config.video_token_id).int() * 2
    return inputs

def caption(frames, times, prompt={prompt!r}, max_new_tokens=64):
    inputs = model_inputs(frames, times, prompt)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
```
'''


VIDEO_INPUTS = {
    "llava_onevision": LLAVA_ONEVISION_VIDEO_INPUTS,
    "llava_next_video": LLAVA_NEXT_VIDEO_VIDEO_INPUTS,
    "smolvlm": SMOLVLM_VIDEO_INPUTS,
    "internvl": INTERNVL_VIDEO_INPUTS,
}


def build(cfg: Any, sizes: ModelSizes) -> nn.Module:
    return build_pretrained_vlm(cfg, sizes.max_tokens_per_row)


def export(
    model: nn.Module,
    cfg: KVideoConfig,
    tokenizer: Tokenizer,
    out_dir: Path,
    trained: frozenset[str],
    *,
    merge_lora: bool = False,
) -> dict[str, Any]:
    vlm: Any = model  # a PretrainedVLM
    hf = vlm.hf
    source = resolve_model_folder("model.path", cfg.model.path)
    info: dict[str, Any] = {"format": "transformers", "base": str(source)}
    with quiet_transformers():
        if cfg.model.lora_rank and merge_lora:
            hf = hf.merge_and_unload()  # the export's own model: the run's is not used after this
            info["lora"] = "merged"
        elif cfg.model.lora_rank:
            info["lora"] = "adapter"  # adapter_config.json: base_model_name_or_path = model.path
        hf.save_pretrained(out_dir)
    save_tokenizer = getattr(tokenizer, "save", None)
    if save_tokenizer is not None:
        save_tokenizer(out_dir)
    for name in PROCESSOR_FILES:
        if (source / name).is_file() and not (out_dir / name).exists():
            shutil.copyfile(source / name, out_dir / name)
    geometry: VideoVlmGeometry = vlm.geometry  # read from model.path when the model was built
    video_inputs = VIDEO_INPUTS.get(geometry.model_type, QWEN_VIDEO_INPUTS)
    # One template: the pieces' braces are format's ({{ }} for a literal brace)
    recipe = (RECIPE_HEAD + video_inputs + RECIPE_TAIL).format(
        model_type=geometry.model_type,
        prompt=cfg.video.prompt,
        folder=str(out_dir.resolve()),
        video_item=geometry.video_item,
    )
    write_text_atomic(out_dir / "CAPTION.md", recipe)
    info["caption_recipe"] = "CAPTION.md"
    return info


PRETRAINED = MODEL_FAMILIES.register("pretrained")(
    ModelSpec(
        family="pretrained",
        build=build,
        export=export,
        part_of=part_of,
    )
)
