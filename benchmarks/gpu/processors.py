"""What kvideo feeds a released VLM, against transformers' own processors on the same frames
(``AutoProcessor``; its video processors need torchvision, which loads on the GPU machine only,
so CPU CI cannot run these: ``kvideo.model.video_patches`` says why kvideo does this step itself).

* ``qwen_patches``: ``Qwen2VLVideoProcessor`` with ``do_resize=False`` on uint8 frames, against
  kvideo's normalization and patch layout, for 1 to 5 frames (odd counts fill the last temporal
  patch): equal within 1e-5.
* ``<family>_auto_processor``: ``AutoProcessor.from_pretrained`` of a ``model=pretrained`` folder
  (the tiny model with its processor saved beside it, its family's chat template) renders a video
  conversation of 4 frames shown at 0, 0.5, 1 and 1.5 s; its ``input_ids`` (Qwen3-VL's timestamp
  text, SmolVLM2's and InternVL3's frame text included), ``mm_token_type_ids``, pixel values,
  ``video_grid_thw`` and ``second_per_grid_ts`` equal what kvideo feeds the model.
* ``assembled_llava_onevision_auto_processor``: the same for a folder ``kvideo.assemble`` made from
  a tiny tower and LM, whose processor files kvideo writes as JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent.parent
PROMPT = "Describe the video."


def _video_processor(kind: str = "qwen2_5_vl") -> Any:
    """The model's own video processor; an ``ImportError`` (the section is skipped) without a
    working torchvision."""
    import torchvision  # type: ignore[import-not-found]  # noqa: F401  (fail here, as an ImportError)

    if kind == "qwen3_vl":
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        return Qwen3VLVideoProcessor()
    if kind == "smolvlm":
        from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

        return SmolVLMVideoProcessor(
            size={"longest_edge": 56},
            max_image_size={"longest_edge": 56},
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        )
    if kind == "llava_onevision":
        from transformers.models.llava_onevision.video_processing_llava_onevision import (
            LlavaOnevisionVideoProcessor,
        )

        return LlavaOnevisionVideoProcessor(
            size={"height": 56, "width": 56}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
    if kind == "internvl":
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

        return InternVLVideoProcessor(
            size={"height": 56, "width": 56}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
    if kind == "llava_next_video":
        from transformers.models.llava_next_video.video_processing_llava_next_video import (
            LlavaNextVideoVideoProcessor,
        )

        return LlavaNextVideoVideoProcessor(
            size={"height": 56, "width": 56},
            do_center_crop=False,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor()


def _save_processor(folder: Path, kind: str) -> None:
    """The model's processor beside the tiny model, as a released folder has it, with the
    family's chat template the tiny tokenizer carries."""
    from transformers import (
        AutoTokenizer,
        InternVLProcessor,
        LlavaNextVideoProcessor,
        LlavaOnevisionProcessor,
        Qwen2_5_VLProcessor,
        Qwen3VLProcessor,
        SmolVLMProcessor,
    )
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    # (processor class, image processor class, the family's own arguments)
    families: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        # the 4 x 4 patch grid of a 56 px frame
        "llava_onevision": (
            LlavaOnevisionProcessor,
            LlavaOnevisionImageProcessorPil,
            {"num_image_tokens": 16, "vision_feature_select_strategy": "full"},
        ),
        "llava_next_video": (
            LlavaNextVideoProcessor,
            LlavaNextImageProcessorPil,
            # CLIP's class token on top of the 14 px patches
            {"patch_size": 14, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1},
        ),
        # the 4 x 4 patch grid, pixel-shuffled 2 x 2
        "internvl": (InternVLProcessor, GotOcr2ImageProcessorPil, {"image_seq_length": 4}),
        "smolvlm": (SmolVLMProcessor, SmolVLMImageProcessorPil, {"image_seq_len": 4}),
        "qwen3_vl": (Qwen3VLProcessor, Qwen2VLImageProcessorPil, {}),
    }
    processor_class, image_processor_class, extra = families.get(
        kind, (Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, {})
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor_class(
        image_processor=image_processor_class.from_pretrained(folder),
        tokenizer=tokenizer,
        video_processor=_video_processor(kind),
        chat_template=tokenizer.chat_template,
        **extra,
    ).save_pretrained(folder)


def check_qwen_patches(tmp: Path) -> dict[str, Any]:
    from kvideo.data.preprocess import normalize_frames
    from kvideo.model.video_patches import qwen_video_patches

    processor = _video_processor()
    statistics = (tuple(processor.image_mean), tuple(processor.image_std))
    worst, grids = 0.0, []
    for frames in range(1, 6):
        clip = torch.randint(0, 256, (frames, 56, 84, 3), dtype=torch.uint8)
        theirs = processor(
            videos=[clip.permute(0, 3, 1, 2)], do_resize=False, do_sample_frames=False, return_tensors="pt"
        )
        mine, grid = qwen_video_patches(
            normalize_frames(clip, statistics=statistics), patch_size=14, merge_size=2, temporal_patch_size=2
        )
        grids.append([list(grid), theirs["video_grid_thw"][0].tolist()])
        worst = max(worst, float((mine - theirs["pixel_values_videos"]).abs().max()))
    return {"max_abs_diff": worst, "grids": grids, "pass": worst <= 1e-5 and all(a == b for a, b in grids)}


def check_auto_processor(tmp: Path, kind: str = "qwen2_5_vl") -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from transformers import AutoProcessor

    from kvideo.config import DataConfig, ModelConfig
    from kvideo.data.preprocess import normalize_frames, pixel_statistics
    from kvideo.data.tokenizer import build_tokenizer, encode_caption
    from kvideo.model.pretrained_build import build_pretrained_vlm
    from tests.helpers.pretrained_vlms import FRAME_SIDE, save_tiny_vlm

    if kind == "assembled":  # processor files written by kvideo.assemble itself
        from kvideo.model.assemble import assemble_llava_onevision
        from tests.helpers.hf_models import save_tiny_parts

        vision, lm = save_tiny_parts(tmp / "parts")
        folder = tmp / kind
        side = int(assemble_llava_onevision(vision, lm, folder)["frame_size"])
    else:
        folder = save_tiny_vlm(tmp / kind, kind)
        _save_processor(folder, kind)
        side = 2 * FRAME_SIDE[kind]
    processor = AutoProcessor.from_pretrained(folder)
    clip = torch.randint(0, 256, (4, side, side, 3), dtype=torch.uint8)
    fps = 2.0  # frames 0, 1, 2, 3 of a 2 fps video: shown at 0, 0.5, 1.0 and 1.5 s
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    timing: dict[str, Any] = {}
    if kind.startswith(("qwen", "smolvlm")):  # the times the model is told (Qwen3-VL, SmolVLM2: as text)
        timing = {"video_metadata": [{"fps": fps, "frames_indices": [0, 1, 2, 3], "total_num_frames": 4}]}
    if kind.startswith("qwen"):
        timing["fps"] = fps
    theirs = processor(
        text=[text],
        videos=[clip.permute(0, 3, 1, 2)],
        do_resize=False,
        do_sample_frames=False,
        return_tensors="pt",
        **timing,
    )

    cfg = ModelConfig(
        name="pretrained", family="pretrained", path=str(folder), max_seq_len=32768, max_text_len=40
    )
    model = build_pretrained_vlm(cfg)
    tokenizer = build_tokenizer(DataConfig(), cfg)
    encoded = encode_caption(tokenizer, PROMPT, "", 40)
    context = torch.tensor([encoded.input_ids[: encoded.answer_at]])
    frames = normalize_frames(clip, statistics=pixel_statistics(cfg))[None]
    times = torch.tensor([[0.0, 0.5, 1.0, 1.5]])
    video = model.video_inputs(frames, torch.ones(1, 4, dtype=torch.bool), times, None)
    ids, _, _ = model.spliced(context, None, torch.tensor([encoded.visual_at]), video.blocks)
    mine = {**model.text_inputs(ids), **video.kwargs}
    same: dict[str, bool] = {}
    for key in ("input_ids", "mm_token_type_ids", "video_grid_thw", "second_per_grid_ts"):
        if key in mine or key in theirs:
            same[key] = (
                key in mine
                and key in theirs
                and bool(torch.allclose(mine[key].double(), theirs[key].double()))
            )
    pixels = "pixel_values" if kind in ("smolvlm", "internvl") else "pixel_values_videos"
    diff = float((mine[pixels] - theirs[pixels]).abs().max())
    return {"same": same, "pixel_max_abs_diff": diff, "pass": all(same.values()) and diff <= 1e-5}


PROCESSOR_SECTIONS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "qwen_patches": check_qwen_patches,
    "qwen2_5_vl_auto_processor": check_auto_processor,
    "qwen3_vl_auto_processor": partial(check_auto_processor, kind="qwen3_vl"),
    "llava_onevision_auto_processor": partial(check_auto_processor, kind="llava_onevision"),
    "llava_next_video_auto_processor": partial(check_auto_processor, kind="llava_next_video"),
    "smolvlm_auto_processor": partial(check_auto_processor, kind="smolvlm"),
    "internvl_auto_processor": partial(check_auto_processor, kind="internvl"),
    "assembled_llava_onevision_auto_processor": partial(check_auto_processor, kind="assembled"),
}
