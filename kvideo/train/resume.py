"""Whether a start may continue the run its run dir holds (``trainer.resume``), and a new run's
starting weights (``trainer.init_from``).

A run dir that holds a checkpoint is continued by a later start, whether it is the same job
requeued or someone running the same command again. Continuing it is only right when the run is
the same experiment. If the saved ``config.yaml`` names another dataset, another model or other
sampling, "resuming" would start that run "8 samples into" an epoch of the other dataset, with
a model state trained on data it no longer sees, and would overwrite ``config.yaml``. So,
before anything is written:

* ``auto`` (the default) resumes a run whose identity (``IDENTITY_KEYS``) is unchanged, and
  refuses any other in one line that names the keys that differ and their values;
* ``force`` resumes anyway, and ``launches.jsonl`` records what changed;
* ``never`` refuses any run dir that holds a checkpoint (nothing in it is touched).

Other keys (the learning rate, the number of steps, the trackers) may change on resume: that is
how a run is extended or retuned.

``trainer.init_from`` is the other way to reuse trained weights: a *new* run (its own run dir, a
fresh optimizer, schedule and data position) starts from a run dir's newest checkpoint, a
checkpoint file or folder, or a builtin model's export (``model.safetensors``). This is LLaVA's
alignment stage followed by instruction tuning on another corpus. The weights the source holds
are loaded; the rest keeps its initialisation (seeded, or the pretrained folders). A source
holding a weight this model does not have is another model's, and is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.tensor import DTensor

from kvideo.config import KVideoConfig
from kvideo.files import read_plain_yaml
from kvideo.train.checkpoint_states import saved_weight_names
from kvideo.trees import scalar_leaves

CONFIG_NAME = "config.yaml"
EXPORT_WEIGHTS = "model.safetensors"

# What makes a run the experiment it is.
DATA_KEYS = ("video.dataset_type", "video.data_root", "video.dataset_name", "data.mixture")
SAMPLING_KEYS = ("video.sampling_policy", "video.fps", "video.max_frames", "video.min_frames")
MODEL_KEYS = tuple(
    f"model.{name}"
    for name in (
        "name",
        "family",
        "vision_backbone",
        "timm_model",
        "patch_size",
        "patch_stem",
        "vision_width",
        "vision_depth",
        "vision_heads",
        "tokens_per_frame",
        "lm_width",
        "lm_depth",
        "lm_heads",
        "max_seq_len",
        "motion_tokens",
        "time_embedding",
        "vision_path",
        "vision_feature_layer",
        "lm_path",
        "path",
        "projector",
        "lora_rank",
        "lora_targets",
    )
)
IDENTITY_KEYS = DATA_KEYS + SAMPLING_KEYS + MODEL_KEYS


class ResumeRefused(ValueError):
    """This start may not continue the run its run dir holds; the message says why and the ways
    out."""


def holds_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint of either format (file names only: nothing is read)."""
    from kvideo.train.checkpoint import checkpoint_dir

    folder = checkpoint_dir(run_dir)
    return folder.is_dir() and any(p.suffix in (".pt", ".dcp") for p in folder.iterdir())


def identity_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{key: [saved value, current value]}`` for the ``IDENTITY_KEYS`` that differ."""
    old, new = scalar_leaves(dict(saved)), scalar_leaves(dict(current))
    changes = {}
    for key in IDENTITY_KEYS:
        before, after = _value(saved, old, key), _value(current, new, key)
        if before != after:
            changes[key] = [before, after]
    return changes


def _value(tree: Mapping[str, Any], leaves: Mapping[str, Any], key: str) -> Any:
    """A key's value: a scalar leaf, or a list (``model.lora_targets``, ``data.mixture``) read
    from the tree. A list a run dir's older config lacks reads as empty (its default)."""
    if key in leaves:
        return leaves[key]
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return [] if node is None and key == "data.mixture" else node


def check_resume(cfg: KVideoConfig, run_dir: Path) -> dict[str, list[Any]] | None:
    """``None`` for a fresh start (no checkpoint in ``run_dir``), else the identity keys this start
    changes (``{}``: none). Raises ``ResumeRefused`` per ``trainer.resume``. Reads only files,
    so every rank takes the same decision before any collective."""
    if not holds_checkpoint(run_dir):
        return None
    mode = cfg.trainer.resume
    if mode == "never":
        raise ResumeRefused(
            f"{run_dir} already holds a checkpoint and trainer.resume=never: use a new hydra.run.dir, "
            "or trainer.resume=auto to continue that run"
        )
    saved_file = run_dir / CONFIG_NAME
    if not saved_file.is_file():
        return {}
    from omegaconf import OmegaConf

    saved = read_plain_yaml(saved_file) or {}
    current = yaml.safe_load(OmegaConf.to_yaml(OmegaConf.structured(cfg))) or {}
    changes = identity_changes(saved, current)
    if changes and mode == "auto":
        listed = ", ".join(f"{key} ({before!r} -> {after!r})" for key, (before, after) in changes.items())
        raise ResumeRefused(
            f"{run_dir} holds a run of another experiment: {listed}; use a new hydra.run.dir (with "
            f"trainer.init_from={run_dir} to start from its weights), or trainer.resume=force to "
            "continue it anyway"
        )
    return changes


def source_weights(path: str) -> tuple[dict[str, torch.Tensor] | None, Path]:
    """``(state_dict, where)`` of ``trainer.init_from``: a checkpoint file's or an export's
    weights, or ``(None, folder)`` for a DCP checkpoint, which is read in place."""
    from kvideo.train.restore import checkpoint_of, find_checkpoint

    target = Path(path).expanduser()
    if (target / EXPORT_WEIGHTS).is_file():
        from safetensors.torch import load_file

        return dict(load_file(str(target / EXPORT_WEIGHTS))), target / EXPORT_WEIGHTS
    if target.is_dir() and (target / "export.json").is_file():
        raise ValueError(
            f"trainer.init_from={path}: an export without {EXPORT_WEIGHTS} (a model=hf_vlm export); start "
            "from the run dir or the checkpoint that wrote it"
        )
    try:
        found = checkpoint_of(*find_checkpoint(target))
    except FileNotFoundError as e:
        raise ValueError(f"trainer.init_from={path}: {e}") from None
    if found.dcp:
        return None, found.path
    return found.state["model"], found.path


def init_weights(model: nn.Module, path: str) -> str:
    """Load ``trainer.init_from``'s weights into ``model`` (whole, or FSDP-sharded: then every rank
    calls it and keeps its shards); returns what was loaded, for the log."""
    loaded, where = source_weights(path)
    state: dict[str, Any] | None = dict(loaded) if loaded is not None else None
    sharded = any(isinstance(p, DTensor) for p in model.parameters())
    own: dict[str, Any] = dict(get_model_state_dict(model)) if sharded else model.state_dict()
    names = set(state) if state is not None else set(saved_weight_names(where))
    unknown = sorted(names - set(own))
    if unknown:
        raise ValueError(
            f"trainer.init_from={path}: {where} holds weights this model does not have (e.g. "
            f"{unknown[0]!r}): it is another model's"
        )
    if not names:
        raise ValueError(f"trainer.init_from={path}: {where} holds no weights")
    for name, value in (state or {}).items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(
                f"trainer.init_from={path}: {where} holds {name!r} of shape {tuple(value.shape)}, this "
                f"model's is {tuple(own[name].shape)}: it is another model's"
            )
    if state is None:  # a DCP folder: each rank reads the pieces of the tensors it holds, in place
        from kvideo.train.dcp_reading import load_dcp

        state = {name: value for name, value in own.items() if name in names}
        load_dcp({"model": state}, Path(where), no_dist=not dist.is_initialized())
        if sharded:
            set_model_state_dict(model, state, options=StateDictOptions(strict=False))
        else:
            model.load_state_dict(state, strict=False)
    elif sharded:
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        model.load_state_dict(state, strict=False)
    return f"initialised {len(names):,} of {len(own):,} weights from {where}"
