"""What the trainer and the inference code ask of a model family: ``ModelSpec`` (torchtitan's
``TrainSpec``), one per ``model.family``, found in ``MODEL_FAMILIES``.

A family supplies how its model is built, the parts ``model.freeze`` names, its FSDP units, what
its checkpoints hold, how it exports and how it generates. Nothing above the model layer compares
a family's name. Below it, the data and pre-flight code read what a family needs from files
through ``ModelConfig.pretrained_parts`` (the config's own statement of where the parts come
from), since those layers cannot import this one.

Adding a family is one module that registers its spec (``@MODEL_FAMILIES.register`` at import)
plus one entry point in the ``kvideo.models`` group naming that module, as for datasets and
decoders (``kvideo.registry``): ``model.family`` is then a valid choice at compose time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from kvideo.config.model import MODEL_PARTS
from kvideo.model.blocks import transformer_blocks
from kvideo.model.generate import caption_batch
from kvideo.registry import MODEL_FAMILIES

if TYPE_CHECKING:
    from kvideo.config import ModelConfig


@dataclass(frozen=True)
class ModelSizes:
    """The data-side sizes a model is built for.

    vocab_size: the tokenizer's.
    max_frames: ``video.max_frames`` (sizes the frame-position table).
    frame_size: ``video.frame_size`` (sizes the builtin ViT's patch-position table).
    resize: ``video.resize`` (how a batch's ``frame_region`` is read).
    max_tokens_per_row: ``data.max_tokens_per_row`` with ``data.packing`` (the LM then runs on
        the real tokens packed into rows, ``kvideo.model.packing``); None = padded rows.
    """

    vocab_size: int
    max_frames: int
    frame_size: int
    resize: str = "square"
    max_tokens_per_row: int | None = None


def first_component(name: str) -> str:
    """``vision.blocks.0.weight`` -> ``vision``: the part of a builtin or ``hf`` model's parameter."""
    return name.split(".", 1)[0]


def trained_weights(model: nn.Module, trained: frozenset[str] | None) -> frozenset[str] | None:
    """``trained``, or ``None`` when it is every parameter: a checkpoint then holds the whole
    ``state_dict``. Only what trains is saved otherwise: a frozen pretrained part comes back from
    its folder and a frozen builtin part from its seed, so a LoRA run's checkpoint is megabytes,
    not the LM's gigabytes at every save."""
    all_params = {name for name, _ in model.named_parameters()}
    return None if trained is None or trained >= all_params else trained


@dataclass(frozen=True)
class ModelSpec:
    """One model family's answers (see the module docstring).

    build: the model from ``model.*`` and the data-side sizes.
    export: writes the family's own files into an export folder and returns what
        ``export.json`` says of them (``kvideo.model.export.export_model`` writes the rest);
        ``merge_lora=True`` merges LoRA adapters into the weights they adapt.

    The rest default to what every family so far shares:
    parts: the parts ``model.freeze`` / ``model.<part>_lr`` name (``vision``, ``projector``, ``lm``).
    fsdp_units: the modules FSDP2 shards one by one (its transformer blocks), before the root.
    checkpoint_keys: the weights a checkpoint holds, given the parameters that train at some
        step; ``None`` = the whole ``state_dict`` (default: ``trained_weights``).
    generate: captions (answers) for a batch: ``caption_batch``'s signature.
    part_of: the part a parameter name belongs to; by default its first name component (the
        model's ``vision`` / ``projector`` / ``lm`` attributes).
    packs: whether its models take ``ModelSizes.max_tokens_per_row`` (``data.packing``).
    """

    family: str
    build: Callable[[ModelConfig, ModelSizes], nn.Module]
    export: Callable[..., dict[str, Any]]
    parts: tuple[str, ...] = MODEL_PARTS
    fsdp_units: Callable[[nn.Module], list[nn.Module]] = transformer_blocks
    checkpoint_keys: Callable[[nn.Module, frozenset[str] | None], frozenset[str] | None] = trained_weights
    generate: Callable[..., list[str]] = caption_batch
    part_of: Callable[[str], str] = first_component
    packs: bool = True


def model_spec(family: str) -> ModelSpec:
    """The spec registered for ``family`` (``model.family``), importing its module on first use."""
    return MODEL_FAMILIES.get(family)


def build_model(
    cfg: ModelConfig,
    *,
    vocab_size: int,
    max_frames: int,
    frame_size: int,
    resize: str = "square",
    max_tokens_per_row: int | None = None,
) -> nn.Module:
    """The model of ``cfg.family``, built for the data-side sizes (``ModelSizes``). A family
    that cannot pack refuses ``max_tokens_per_row`` in one line."""
    spec = model_spec(cfg.family)
    if max_tokens_per_row is not None and not spec.packs:
        raise ValueError(
            f"data.packing=true is not supported for model.family={cfg.family}; use data.packing=false"
        )
    sizes = ModelSizes(vocab_size, max_frames, frame_size, resize, max_tokens_per_row)
    return spec.build(cfg, sizes)
