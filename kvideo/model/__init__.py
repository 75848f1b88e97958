"""The video-language model: per-frame ViT -> projector -> causal LM with a caption loss.

Importing this package imports torch; nothing in the config / registry path imports it, so
``python train.py --cfg job`` stays fast.
"""

from kvideo.data.tokenizer import IGNORE_INDEX
from kvideo.model.loss import caption_nll
from kvideo.model.spec import ModelSpec, build_model, model_spec
from kvideo.model.vlm import (
    VideoLanguageModel,
    build_attention_mask,
    count_parameters,
    parameter_summary,
)

__all__ = [
    "IGNORE_INDEX",
    "ModelSpec",
    "VideoLanguageModel",
    "build_attention_mask",
    "build_model",
    "caption_nll",
    "count_parameters",
    "model_spec",
    "parameter_summary",
]
