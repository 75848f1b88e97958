"""uint8 frames -> normalized float model input, on whatever device the frames are on.

Samples travel between processes as uint8 (4x less to pickle and pin than float), and
normalization runs once per batch on the training device: on the GPU when frames were
decoded there, so no host round trip.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from kvideo.config.model import ModelConfig

# ImageNet statistics: what the builtin and timm backbones use; harmless from scratch.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
Statistics = tuple[tuple[float, ...], tuple[float, ...]]


def pixel_statistics(model: ModelConfig) -> Statistics:
    """``(mean, std)`` the model's vision part expects: a Hugging Face tower's own (its
    ``preprocessor_config.json``: SigLIP 0.5/0.5, CLIP OpenAI's; a released VLM's own), else
    ImageNet's."""
    if model.pretrained_parts:
        return _folder_statistics("model.vision_path", model.vision_path)
    if model.pretrained_model:
        return _folder_statistics("model.path", model.path)
    return MEAN, STD


@lru_cache(maxsize=8)
def _folder_statistics(field: str, value: str) -> Statistics:
    from kvideo.hf_folders import image_statistics, resolve_model_folder

    return image_statistics(field, resolve_model_folder(field, value))


def normalize_frames(
    frames: torch.Tensor, dtype: torch.dtype = torch.float32, statistics: Statistics = (MEAN, STD)
) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float, normalized per channel."""
    x = frames.to(dtype).movedim(-1, -3).div_(255.0)
    shape = (3, 1, 1)
    mean = torch.tensor(statistics[0], dtype=dtype, device=x.device).view(shape)
    std = torch.tensor(statistics[1], dtype=dtype, device=x.device).view(shape)
    return x.sub_(mean).div_(std)
