"""The video-language model: per-frame ViT -> projector -> causal LM with a caption loss.

Importing this package imports torch; nothing in the config / registry path imports it, so
``python train.py --cfg job`` stays fast.
"""

import warnings

from kvideo.data.tokenizer import IGNORE_INDEX
from kvideo.model.loss import caption_nll
from kvideo.model.spec import ModelSpec, build_model, model_spec
from kvideo.model.vlm import (
    VideoLanguageModel,
    build_attention_mask,
    count_parameters,
    parameter_summary,
)

# peft (0.21) asks every model it wraps or loads an adapter onto for transformers'
# ``is_gradient_checkpointing``, which transformers 5 deprecated: a FutureWarning on every LoRA
# run that says nothing to its user.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

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
