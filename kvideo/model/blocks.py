"""The transformer blocks of a model, and activation checkpointing of each, for both families.

``transformer_blocks(part)`` finds the repeated layers of a part: kvideo's own ``Block`` (the
builtin ViT and LM), and for Hugging Face models the layers their class declares unsplittable
(``_no_split_modules``: ``Qwen2DecoderLayer``, ``SiglipEncoderLayer``, ...) that sit in a layer
list, which is also how accelerate and torchtitan pick FSDP units. Found by walking the
modules, so a peft (LoRA) wrapper or a two-tower folder changes nothing.

``recompute_in_backward(block)`` is ``model.activation_checkpointing``: the block's ``forward``
runs under ``torch.utils.checkpoint`` (non-reentrant) while training, so its activations are
dropped after the forward and recomputed in the backward pass. The wrapper replaces the
block's ``forward`` (an instance attribute), so the module's hooks, FSDP's parameter all-gather
among them, stay outside the checkpointed region: the block's parameters are gathered once
before it runs and the recomputation reuses them (torchtitan's order: checkpoint inside, FSDP
outside).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from kvideo.model.lm import Block


def transformer_blocks(part: nn.Module) -> list[nn.Module]:
    """The blocks of ``part`` in module order (none for a part without repeated layers)."""
    unsplittable: set[str] = set()
    for module in part.modules():
        unsplittable.update(getattr(module, "_no_split_modules", None) or ())
    blocks: list[nn.Module] = []
    for module in part.modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        blocks += [
            child
            for child in module.children()
            if isinstance(child, Block) or type(child).__name__ in unsplittable
        ]
    return blocks


def recompute_in_backward(block: nn.Module) -> None:
    """Activation checkpointing of ``block`` (see the module docstring); in eval mode or without
    autograd the block runs as before."""
    run: Callable[..., Any] = block.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if block.training and torch.is_grad_enabled():
            return checkpoint(run, *args, use_reentrant=False, **kwargs)
        return run(*args, **kwargs)

    block.forward = forward
