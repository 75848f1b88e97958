"""Model and optimizer states between a checkpoint and a live model, by parameter name: which
weights a checkpoint must hold, loading them whole or from a DCP folder, and the optimizer state
of a single file (integer ids) under the names DCP and ``set_optimizer_state_dict`` use.

A checkpoint written under another freeze / LoRA split is refused by name, never half-loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kvideo.train.dcp_reading import load_dcp, saved_index
from kvideo.train.guards import RunFailed


def require_weights_match(
    saved: Iterable[str], expected: Iterable[str], trained: frozenset[str] | None, path: Path
) -> None:
    """Refuse a checkpoint that lacks weights this run trains (written under another
    freeze / LoRA split) or holds weights this model does not have."""
    saved, expected = set(saved), set(expected)
    if trained is not None:
        missing = sorted(trained - saved)
        if missing:
            raise RunFailed(
                f"{path} lacks {len(missing)} of the weights this run trains (e.g. {missing[0]!r}): it was "
                "written under another model.freeze / model.freeze_schedule / model.lora_rank"
            )
    unexpected = sorted(saved - expected)
    if unexpected:
        raise RunFailed(f"{path} holds weights this model does not have (e.g. {unexpected[0]!r})")


def load_trained_weights(
    model: nn.Module, saved: dict[str, Any], trained: frozenset[str] | None, path: Path
) -> None:
    """Load a checkpoint's weights into ``model``: all of them, or (``trained`` given) the
    trained ones over the pretrained rest, refusing a checkpoint written under another split."""
    if trained is None:
        model.load_state_dict(saved)
        return
    require_weights_match(saved, model.state_dict(), trained, path)
    model.load_state_dict(saved, strict=False)


def saved_weight_names(folder: Path) -> list[str]:
    """The weights a DCP folder holds (its index's ``model.*`` entries)."""
    index = saved_index(folder).state_dict_metadata
    return [key.removeprefix("model.") for key in index if key.startswith("model.")]


def load_dcp_weights(model: nn.Module, folder: Path, trained: frozenset[str] | None) -> None:
    """A DCP folder's weights into a whole (unsharded) model in this process alone, whatever the
    number of ranks that wrote it (``load_trained_weights``'s counterpart)."""
    require_weights_match(saved_weight_names(folder), model.state_dict(), trained, folder)
    state = {name: value for name, value in model.state_dict().items() if trained is None or name in trained}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process")
        load_dcp({"model": state}, folder, no_dist=True)
    model.load_state_dict(state, strict=trained is None)


def optimized_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters, in its order (that of a single-file checkpoint's
    integer ids)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def create_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, names: set[str]) -> None:
    """Give exactly the parameters ``names`` an optimizer state (zeros), so that the state a
    checkpoint holds can be loaded into it.

    ``get_state_dict`` / ``set_state_dict`` make one themselves when the optimizer has none, for
    every parameter that requires grad: a parameter that a later freeze stage trains would
    then come back with a state it never had and start its moments one step late, and DCP
    would look for states the checkpoint does not hold. One step at lr 0 on zero gradients
    leaves every weight as it was (AdamW's decay multiplies by 1 - 0 * weight_decay).
    """
    by_name = dict(
        zip(
            optimized_names(model, optimizer),
            (p for g in optimizer.param_groups for p in g["params"]),
            strict=True,
        )
    )
    unknown = sorted(names - by_name.keys())
    if unknown:
        raise RunFailed(
            "the checkpoint holds optimizer states of parameters this run does not train (e.g. "
            f"{unknown[0]!r}): it was written under another model.freeze / model.freeze_schedule / "
            "model.lora_rank"
        )
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for name in names:
        param = by_name[name]
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def named_optimizer_state(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A single-file checkpoint's optimizer state (integer ids) keyed by parameter name, as
    ``set_optimizer_state_dict`` takes it."""
    groups = state["param_groups"]
    ids = [i for group in groups for i in group["params"]]
    if len(ids) != len(names):
        raise RunFailed(
            f"the checkpoint's optimizer covers {len(ids)} parameters, this run's {len(names)}: it was "
            "written under another model.freeze / model.freeze_schedule / model.lora_rank"
        )
    name_of = dict(zip(ids, names, strict=True))
    return {
        "state": {name_of[i]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [name_of[i] for i in group["params"]]} for group in groups],
    }
