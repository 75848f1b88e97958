"""kvideo's Qwen video patch layout is transformers' own (``kvideo.model.video_patches`` says why
kvideo does this step).

Two checks that run without torchvision: against the video processor's ``patchify`` (its source,
from the installed transformers, run as it is; the module itself cannot be imported here), and
against the image processor's PIL route (which imports) on a still clip, normalization included.
The whole ``AutoProcessor`` route is compared in the prepared GPU check.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kvideo.data.preprocess import normalize_frames
from kvideo.model.video_patches import group_times, qwen_video_patches, seconds_per_group


def processor_patchify() -> Any:
    """``Qwen2VLVideoProcessor.patchify`` of the installed transformers, compiled from its source."""
    import transformers

    source = Path(transformers.__file__).parent / "models" / "qwen2_vl" / "video_processing_qwen2_vl.py"
    tree = ast.parse(source.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Qwen2VLVideoProcessor")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "patchify")
    fn.decorator_list = []
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(source), "exec"), namespace)
    return namespace["patchify"]


@pytest.mark.parametrize("frames", [1, 4, 5])
def test_patches_match_the_video_processors_patchify(frames: int) -> None:
    clip = torch.randn(frames, 3, 56, 84)
    mine, grid = qwen_video_patches(clip, patch_size=14, merge_size=2, temporal_patch_size=2)
    theirs, grid_t, grid_h, grid_w = processor_patchify()(
        None, clip[None], patch_size=14, merge_size=2, temporal_patch_size=2
    )
    assert grid == (grid_t, grid_h, grid_w) == ((frames + 1) // 2, 4, 6)
    assert torch.equal(mine, theirs[0])


def test_a_still_clip_matches_the_image_processor() -> None:
    """A clip of one repeated frame is what the image processor makes of that frame (it fills the
    temporal patch the same way), after kvideo's normalization with the processor's mean/std."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil()
    image = np.random.default_rng(0).integers(0, 256, size=(56, 84, 3), dtype=np.uint8)
    theirs = processor(images=[image], do_resize=False, return_tensors="pt")
    statistics = (tuple(processor.image_mean), tuple(processor.image_std))
    frame = normalize_frames(torch.from_numpy(image), statistics=statistics)
    mine, grid = qwen_video_patches(frame[None], patch_size=14, merge_size=2, temporal_patch_size=2)
    assert list(theirs["image_grid_thw"][0]) == list(grid)
    torch.testing.assert_close(mine, theirs["pixel_values"], atol=1e-5, rtol=0)


def test_seconds_per_group_is_the_real_spacing() -> None:
    # frames 0.5 s apart (2 fps sampled): a group of 2 spans 1 s, as temporal_patch_size / fps
    assert seconds_per_group(torch.tensor([0.0, 0.5, 1.0, 1.5]), 2) == pytest.approx(1.0)
    assert seconds_per_group(torch.tensor([3.0]), 2) == 2.0  # one group: its span is never used


def test_group_times_are_the_mean_of_each_patchs_first_and_last_frame() -> None:
    """Qwen3-VL's timestamps (its processor's ``_calculate_timestamps``), from the real times; an
    odd last frame is repeated, as its pixels are."""
    assert group_times(torch.tensor([0.0, 0.5, 1.0, 1.5]), 2, 2) == [0.25, 1.25]
    assert group_times(torch.tensor([0.0, 0.5, 1.0]), 2, 2) == [0.25, 1.0]
    assert group_times(torch.tensor([]), 2, 1) == [0.0]
