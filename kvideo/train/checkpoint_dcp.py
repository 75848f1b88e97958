"""Partitioned checkpoints (``trainer.strategy=fsdp``): one folder per step, written through
``torch.distributed.checkpoint`` (DCP), every rank writing its own shards.

Layout under ``<run_dir>/checkpoints/``::

    step_000120.dcp/           a complete checkpoint
        .metadata              DCP's index: which rank wrote which piece of which tensor
        __0_0.distcp ...       one file per rank: its shards of the trained weights and of the
                               optimizer states
        trainer.pt             the rest (step, schedule, data position, every rank's RNG
                               states and skip counts), written by rank 0
    step_000150.dcp.tmp/       a checkpoint being written: never read

A checkpoint is written into ``<name>.tmp`` and renamed once DCP's ``save`` has returned on
rank 0, which happens only after every rank's files are written and fsynced and rank 0 has
written ``.metadata`` last: a kill at any moment leaves the previous folders and at most a
``.tmp`` folder, which loading ignores and the next save replaces. The ``keep`` newest folders
stay (the older one is the fallback when the newest cannot be read).

DCP stores tensors by name and shard offsets, not by rank, so a checkpoint loads at any number
of ranks (resharding), into an FSDP model or a whole one (``no_dist`` in a single process:
``kvideo.train.restore``). ``newest_checkpoint`` picks the newest checkpoint of either
format (these folders or the single-file ``.pt`` ones of ``kvideo.train.checkpoint``), so a run
can change ``trainer.strategy`` and resume.

DCP's ``.metadata`` is a pickle (DCP's own format): load only checkpoints you trust, as with
any pickle. ``trainer.pt`` loads with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kvideo.errors import first_line
from kvideo.files import open_new
from kvideo.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    fsync_dir,
    load_latest,
)
from kvideo.train.dcp_reading import saved_index, short_rank_files

log = logging.getLogger(__name__)

SUFFIX = ".dcp"
TMP_SUFFIX = ".tmp"
TRAINER_STATE_NAME = "trainer.pt"
METADATA_NAME = ".metadata"
TRAINER_KEYS = ("format", "step", "scheduler", "data", "ranks", "optimizer_params")
_FOLDER_RE = re.compile(r"step_(\d+)\.dcp")

# The format name a strategy gives (kvideo.train.parallel): a folder per step, a file per rank.
DCP = "dcp"


def best_folder(ckpt_dir: Path) -> Path:
    """The best validation's folder (``trainer.keep_best``): never a resume's candidate."""
    return ckpt_dir / f"best{SUFFIX}"


def folder_for(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step_{step:06d}{SUFFIX}"


def tmp_for(folder: Path) -> Path:
    return folder.with_name(folder.name + TMP_SUFFIX)


def list_dcp_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the complete DCP checkpoints, newest first."""
    found = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = _FOLDER_RE.fullmatch(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """A folder's ``trainer.pt``, verified, after its index (read without running code from it,
    ``kvideo.train.dcp_reading``) and the shard files the index names; any failure is a
    ``CheckpointError`` naming the file, so the caller can fall back to an older checkpoint."""
    if not (folder / METADATA_NAME).is_file():
        raise CheckpointError(f"{folder}: no {METADATA_NAME} (not a complete DCP checkpoint)")
    short = short_rank_files(folder, saved_index(folder))
    if short:
        raise CheckpointError(
            f"{folder / short[0]}: missing, or shorter than the checkpoint's index says "
            f"({len(short)} such shard file(s))"
        )
    path = folder / TRAINER_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable ({first_line(e, typed=True)})") from None
    if not isinstance(state, dict) or any(k not in state for k in TRAINER_KEYS):
        raise CheckpointError(f"{path}: not a kvideo trainer state (expected keys {list(TRAINER_KEYS)})")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {state['format']} (this kvideo reads {FORMAT_VERSION})")
    return state


@dataclass(frozen=True)
class Found:
    """The newest usable checkpoint of a run."""

    path: Path
    """``last.pt`` / ``step_*.pt``, or a ``step_*.dcp`` folder."""
    state: dict[str, Any]
    """The whole checkpoint of a ``.pt`` file; a folder's ``trainer.pt`` (weights and optimizer
    states stay on disk until ``dcp.load`` reads the shards it needs)."""

    @property
    def dcp(self) -> bool:
        """A DCP folder (one file per rank), not a single ``.pt`` file."""
        return self.path.is_dir()

    @property
    def step(self) -> int:
        return int(self.state["step"])


def newest_checkpoint(ckpt_dir: Path) -> Found | None:
    """The newest usable checkpoint of either format (at equal steps, the folder).

    ``None`` when there is none. Raises ``CheckpointError`` when checkpoints exist but none is
    usable: silently starting over would throw away a run's progress.
    """
    errors: list[str] = []
    candidates: list[Found] = []
    for _, folder in list_dcp_checkpoints(ckpt_dir):
        try:
            candidates.append(Found(folder, read_trainer_state(folder)))
            break
        except CheckpointError as e:
            log.warning("checkpoint %s; trying an older one", e)
            errors.append(str(e))
    try:
        single = load_latest(ckpt_dir, map_location="cpu")  # logs its own fallbacks
    except CheckpointError as e:
        errors.append(str(e))
        single = None
    if single is not None:
        candidates.append(Found(single[1], single[0]))
    if not candidates:
        if errors:
            raise CheckpointError("no usable checkpoint in " + str(ckpt_dir) + ":\n  " + "\n  ".join(errors))
        return None
    return max(candidates, key=lambda found: (found.step, found.dcp))


# ----------------------------------------------------------------------------- writing


def prepare_tmp(folder: Path) -> Path:
    """An empty ``<folder>.tmp``; rank 0 only, before the ranks write into it, and with no
    other save in flight: every ``.tmp`` folder there is a killed save's, and goes."""
    for stale in folder.parent.glob(f"*{SUFFIX}{TMP_SUFFIX}"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_for(folder)
    tmp.mkdir(parents=True)
    return tmp


def write_trainer_state(tmp: Path, state: dict[str, Any]) -> None:
    """``trainer.pt`` into the folder being written (rank 0), fsynced."""
    path = tmp / TRAINER_STATE_NAME
    with open_new(path, "wb") as f:
        torch.save({"format": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())


def commit(tmp: Path, folder: Path, *, keep: int) -> None:
    """Rename a fully written ``<folder>.tmp`` to ``folder`` and remove all but the ``keep``
    newest folders (rank 0, after DCP's save returned there)."""
    fsync_dir(tmp)
    if folder.exists():  # the same step saved again (a resumed run re-saving): replace it
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    fsync_dir(folder.parent)
    for _, old in list_dcp_checkpoints(folder.parent)[max(keep, 1) :]:
        shutil.rmtree(old, ignore_errors=True)
