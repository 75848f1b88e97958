"""``video.resize``: the sizes frames are decoded at (Qwen's smart_resize rule exactly), where the
picture sits in a padded frame, and models that read only the picture's patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.data.tokenizer import ChatTokenizer
from kvideo.model import build_model
from kvideo.model.regions import patch_coverage
from kvideo.resize import Resize, qwen_smart_resize
from tests.helpers.configs import tiny_hf_model, tiny_model

# Outputs of qwen-vl-utils 0.0.14's own smart_resize(h, w, factor=28, min_pixels=4*28*28,
# max_pixels=768*28*28), run on these shapes. On 199,069 random shapes (factors 14/16/28/32, four
# budgets) kvideo's rule gave its output in every case where that has no zero side; in the other
# 12,644 (elongated frames under a small budget) qwen-vl-utils returns a 0 px side, kvideo one factor.
QWEN_CASES = [
    ((1080, 1920), (560, 1008)),
    ((720, 1280), (560, 1008)),
    ((360, 640), (364, 644)),
    ((1920, 1080), (1008, 560)),
    ((100, 100), (112, 112)),
    ((28, 5600), (28, 5600)),
    ((17, 3000), (28, 2996)),
    ((2000, 10), (1988, 28)),
]


@pytest.mark.parametrize(("source", "expected"), QWEN_CASES)
def test_max_pixels_sizes_follow_qwens_smart_resize(
    source: tuple[int, int], expected: tuple[int, int]
) -> None:
    got = qwen_smart_resize(*source, factor=28, min_pixels=4 * 28 * 28, max_pixels=768 * 28 * 28)
    assert got == expected


def test_every_max_pixels_frame_keeps_the_budget_and_the_grid() -> None:
    rule = Resize("max_pixels", 224, 0, 32)
    for width in range(20, 3000, 37):
        for height in (16, 90, 224, 480, 1080, 2000):
            if max(width, height) / min(width, height) > 200:
                continue
            h, w = rule.output_size(width, height)
            assert h % 32 == 0 and w % 32 == 0 and h * w <= 224 * 224, (width, height, h, w)


def test_keep_aspect_scales_the_long_side_to_the_square() -> None:
    rule = Resize("keep_aspect", 224)
    assert rule.output_size(1920, 1080) == (126, 224)
    assert rule.output_size(1080, 1920) == (224, 126)
    assert rule.output_size(5000, 1) == (1, 224)
    assert Resize("square", 224).output_size(1920, 1080) == (224, 224)


def test_patch_coverage_is_the_pictures_share_of_each_patch() -> None:
    region = torch.tensor([[4, 0, 8, 16], [0, 0, 16, 16]])  # rows 4..11 of a 16x16 frame; the whole
    coverage = patch_coverage(region, (16, 16), (4, 4))
    assert coverage[0, :, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert bool((coverage[1] == 1).all())
    half = patch_coverage(torch.tensor([[2, 0, 12, 16]]), (16, 16), (4, 4))
    assert half[0, :, 0].tolist() == [0.5, 1.0, 1.0, 0.5]


TINY = tiny_model(patch_size=4, lm_depth=1, max_text_len=8)


def test_builtin_keep_aspect_reads_only_the_picture() -> None:
    """With the picture on whole patches, the padding's pixels change nothing: the ViT hides
    padding patches from the picture's, and the projector pools the picture only."""
    torch.manual_seed(0)
    model: Any = build_model(TINY, vocab_size=30, max_frames=2, frame_size=16, resize="keep_aspect").eval()
    frames = torch.randn(2, 2, 3, 16, 16)
    mask = torch.tensor([[True, True], [True, False]])
    region = torch.tensor([[4, 0, 8, 16], [0, 4, 16, 8]])  # a wide and a tall picture, centred
    ids = torch.randint(0, 30, (2, 8))
    out = model(frames, mask, ids, frame_region=region)["logits"]
    changed = frames.clone()
    changed[0, :, :, :4] = 7.0
    changed[1, :, :, :, 12:] = -3.0
    torch.testing.assert_close(model(changed, mask, ids, frame_region=region)["logits"], out)
    inside = frames.clone()
    inside[0, :, :, 8] += 1.0  # the picture itself is read
    assert not torch.allclose(model(inside, mask, ids, frame_region=region)["logits"], out)


def test_hf_max_pixels_runs_each_clip_at_its_size_whatever_its_batch(
    tiny_hf_parts: tuple[Path, Path],
) -> None:
    vision, lm = tiny_hf_parts
    cfg = tiny_hf_model(vision, lm, time_embedding=False, max_text_len=8)
    torch.manual_seed(0)
    vocab = ChatTokenizer(str(lm)).vocab_size
    model: Any = build_model(cfg, vocab_size=vocab, max_frames=2, frame_size=64, resize="max_pixels").eval()
    frames = torch.zeros(2, 2, 3, 64, 96)
    frames[0, :, :, :32, :96] = torch.randn(2, 3, 32, 96)  # a 32x96 clip (3 tokens per frame)
    frames[1] = torch.randn(2, 3, 64, 96)  # a 64x96 clip (6 tokens per frame)
    region = torch.tensor([[0, 0, 32, 96], [0, 0, 64, 96]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    visual, keys = model.visual_tokens(frames, mask, None, region)
    assert visual.shape[1] == 12 and keys.sum(1).tolist() == [6, 12]
    ids = torch.randint(0, vocab, (2, 8))
    both = model(frames, mask, ids, frame_region=region)["logits"]
    alone = model(frames[:1, :, :, :32], mask[:1], ids[:1], frame_region=region[:1])["logits"]
    torch.testing.assert_close(alone[0], both[0], rtol=1e-4, atol=1e-4)
