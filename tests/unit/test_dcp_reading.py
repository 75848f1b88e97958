"""A DCP checkpoint in a run dir runs no code from it: a planted ``.metadata`` or a planted
non-tensor entry is refused in one line naming the checkpoint, the payload never runs, and a
damaged newest folder (planted index, truncated index, a lost shard file) falls back to the
older checkpoint, as a damaged ``last.pt`` does."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from kvideo.train.checkpoint import CheckpointError
from kvideo.train.checkpoint_dcp import (
    METADATA_NAME,
    commit,
    folder_for,
    newest_checkpoint,
    prepare_tmp,
    write_trainer_state,
)
from kvideo.train.checkpoint_states import load_dcp_weights, saved_weight_names
from kvideo.train.dcp_reading import load_dcp


class Payload:
    """What a hostile file would hold: unpickling it creates ``marker`` (it runs a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _save(ckpt_dir: Path, step: int, model: nn.Module, **extra: Any) -> Path:
    """A kvideo DCP checkpoint of ``model`` (and ``extra`` entries) at ``step``."""
    folder = folder_for(ckpt_dir, step)
    tmp = prepare_tmp(folder)
    trainer = {"step": step, "scheduler": {}, "data": {}, "ranks": [], "optimizer_params": []}
    write_trainer_state(tmp, trainer)
    dcp_save({"model": model.state_dict(), **extra}, checkpoint_id=tmp, no_dist=True)
    commit(tmp, folder, keep=3)
    return folder


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))


def test_a_checkpoint_loads_as_before(model: nn.Module, tmp_path: Path) -> None:
    folder = _save(tmp_path, 1, model, extra={"lr": 1e-3, "betas": (0.9, 0.95), "name": "adamw"})
    other = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    load_dcp_weights(other, folder, None)
    theirs = other.state_dict()
    assert all(torch.equal(value, theirs[name]) for name, value in model.state_dict().items())
    state: dict[str, Any] = {"extra": {"lr": 0.0, "betas": (0.0, 0.0), "name": ""}}
    load_dcp(state, folder, no_dist=True)
    assert state["extra"] == {"lr": 1e-3, "betas": (0.9, 0.95), "name": "adamw"}


def test_a_planted_index_is_refused_and_never_runs(model: nn.Module, tmp_path: Path) -> None:
    older = _save(tmp_path, 1, model)
    newest = _save(tmp_path, 2, model)
    marker = tmp_path / "pwned"
    (newest / METADATA_NAME).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match=r"\.metadata: refused: it asks for posix\.system") as raised:
        saved_weight_names(newest)
    assert "\n" not in str(raised.value)
    found = newest_checkpoint(tmp_path)  # the damaged newest is passed over, with a warning
    assert found is not None and found.path == older
    assert not marker.exists()


def test_a_planted_entry_is_refused_and_never_runs(model: nn.Module, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = _save(tmp_path, 1, model, extra=Payload(marker))
    with pytest.raises(CheckpointError, match=r"entry 'extra' is not plain data .*refused"):
        load_dcp({"extra": None}, folder, no_dist=True)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated_index", "lost_shard", "short_shard"])
def test_a_damaged_newest_folder_falls_back_to_the_older_one(
    damage: str, model: nn.Module, tmp_path: Path
) -> None:
    older = _save(tmp_path, 1, model)
    newest = _save(tmp_path, 2, model)
    shard = next(newest.glob("*.distcp"))
    if damage == "truncated_index":
        index = newest / METADATA_NAME
        index.write_bytes(index.read_bytes()[:40])
    elif damage == "lost_shard":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:10])
    found = newest_checkpoint(tmp_path)
    assert found is not None and found.path == older
