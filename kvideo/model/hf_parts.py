"""The Hugging Face parts kvideo puts together (``model=hf_vlm``: ``kvideo.model.hf_vlm``) or loads
whole (``model=pretrained``): offline loading with transformers' chatter kept quiet, the vision
tower run per frame, and LoRA on a causal LM."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kvideo.config.model import ModelConfig
from kvideo.model.load_report import load_report_errors
from kvideo.model.lora_rank import check_lora_rank


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Loading the vision half of a two-tower CLIP / SigLIP folder lists every text-tower weight
    as unexpected; that is the intent here, so only errors are shown while loading (and no
    per-file progress bar: the run's log says what was loaded). A load that fails on weights that
    do not fit the config says which (``load_report``)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        with load_report_errors():  # a failed load's report, in its one line
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def load_vision_model(folder: Path, *, attn_implementation: str) -> Any:
    """The tower in ``folder``: the vision model class of a two-tower folder's ``vision_config``
    (``SiglipVisionModel`` from a SigLIP folder), else ``AutoModel``."""
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    vision_config = getattr(config, "vision_config", None)
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "dtype": torch.float32,
        "attn_implementation": attn_implementation,
    }
    with quiet_transformers():
        if vision_config is not None:
            vision_class: Any = MODEL_MAPPING[type(vision_config)]
            model: nn.Module = vision_class.from_pretrained(folder, **kwargs)
        else:
            model = AutoModel.from_pretrained(folder, **kwargs)
    return model


def load_causal_lm(folder: Path, *, attn_implementation: str) -> Any:
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        model: nn.Module = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, attn_implementation=attn_implementation
        )
    return model


def freeze_unreachable(tower: HFVisionTower) -> list[str]:
    """Freeze the tower's parameters that cannot reach the chosen hidden state (the layers after
    it, a post-layernorm, SigLIP's pooling head) and return their names.

    They never get a gradient: training them would only cost optimizer memory, and DDP refuses
    parameters that require grad but receive none. Found by autograd on one blank frame, so any
    architecture is handled without a list of module names.
    """
    params = [(name, p) for name, p in tower.named_parameters() if p.requires_grad]
    with torch.enable_grad():
        grid = tower(torch.zeros(1, 3, tower.image_size, tower.image_size))
        grads = torch.autograd.grad(grid.sum(), [p for _, p in params], allow_unused=True)
    unreachable = [name for (name, _), g in zip(params, grads, strict=True) if g is None]
    for name, param in params:
        if name in unreachable:
            param.requires_grad_(False)
    return unreachable


class HFVisionTower(nn.Module):
    """Frames -> the patch grid of one hidden state of a Hugging Face vision model.

    ``feature_layer`` indexes ``hidden_states`` (embeddings first), as LLaVA's
    ``vision_feature_layer``. Tokens before the patch grid (CLIP's class token, DINOv2's
    registers) are dropped: the projector pools the grid spatially.
    """

    model: Any  # a transformers PreTrainedModel: its config and hidden_states are not in nn.Module's types

    def __init__(self, model: Any, *, feature_layer: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.model = model
        self.feature_layer = feature_layer
        self.grid = image_size // patch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.out_width = int(model.config.hidden_size)

    def forward(self, images: Tensor, patch_keys: Tensor | None = None) -> Tensor:
        """``images`` (N, 3, H, W) normalized with the tower's mean/std -> (N, H/p, W/p, C).

        Frames of another size than the tower's ``image_size`` (``video.resize=max_pixels``) run
        with ``interpolate_pos_encoding``, the position grid resized as the tower's own code does.
        ``patch_keys`` is not used: Hugging Face towers take no patch mask (``keep_aspect`` padding
        is the tower's mean colour, as LLaVA pads; the projector pools the picture only).
        """
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        extra = {} if (rows, cols) == (self.grid, self.grid) else {"interpolate_pos_encoding": True}
        trains = any(p.requires_grad for p in self.model.parameters())
        with torch.set_grad_enabled(trains and torch.is_grad_enabled()):  # a frozen tower keeps nothing
            out = self.model(pixel_values=images, output_hidden_states=True, **extra)
        states: Tensor = out.hidden_states[self.feature_layer]
        patches = rows * cols
        if states.shape[1] < patches:
            raise ValueError(
                f"the vision tower returned {states.shape[1]} tokens for a {rows}x{cols} patch grid"
            )
        return states[:, -patches:].reshape(states.shape[0], rows, cols, states.shape[-1])


def linear_layer_names(module: nn.Module) -> list[str]:
    """The distinct last name components of ``module``'s ``nn.Linear`` layers (LoRA targets)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)})


def add_lora(lm: Any, cfg: ModelConfig) -> Any:
    """``lm`` wrapped by peft with LoRA of ``model.lora_rank`` on ``model.lora_targets``; peft
    freezes the LM's own weights, so only the adapters train."""
    found = linear_layer_names(lm)
    missing = [t for t in cfg.lora_targets if t not in found]
    if missing:
        raise ValueError(
            f"model.lora_targets {missing} are not linear layers of the LM in model.lm_path "
            f"({type(lm).__name__}); its linear layers are named {found}"
        )
    check_lora_rank(
        cfg.lora_rank,
        ((n, m) for n, m in lm.named_modules() if n.rsplit(".", 1)[-1] in cfg.lora_targets),
    )
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        task_type="CAUSAL_LM",
    )
    wrapped: nn.Module = get_peft_model(lm, config)
    return wrapped
