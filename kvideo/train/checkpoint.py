"""Atomic, verifiable checkpoints and the RNG state that makes a resume exact.

Layout under ``<run_dir>/checkpoints/``:

* ``last.pt``: the newest checkpoint. It only ever appears by ``os.replace`` of a fully
  written and fsynced ``ckpt.tmp`` in the same directory, so a kill at any moment leaves
  either the previous ``last.pt`` or the new one, never a truncated file.
* ``step_XXXXXX.pt``: independent copies (written the same way) of the newest ``keep``
  checkpoints, so a ``last.pt`` damaged after the fact (disk trouble, a stray ``cp``) still
  has something to fall back to. Copies rather than hard links: a hard link shares the inode,
  so whatever damaged ``last.pt`` would damage its "backup" too.

Loading never looks at ``*.tmp``. It verifies what it loads (``torch.load`` succeeds and the
expected keys are there) and falls back from ``last.pt`` to the newest readable ``step_*.pt``,
saying so.

Files are loaded with ``weights_only=True``: every state is stored as tensors and plain
Python values (numpy's RNG state is converted), so a checkpoint cannot execute code.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvideo.errors import first_line
from kvideo.files import open_new

log = logging.getLogger(__name__)

CKPT_DIRNAME = "checkpoints"
LAST_NAME = "last.pt"
# The weights of the best validation so far (trainer.keep_best): never a resume's candidate.
BEST_NAME = "best.pt"
TMP_NAME = "ckpt.tmp"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "step", "model", "optimizer", "scheduler", "data", "ranks")
_STEP_RE = re.compile(r"step_(\d+)\.pt")

# The format name a strategy gives (kvideo.train.parallel): one file, written by rank 0.
SINGLE_FILE = "single_file"


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (the partial file is removed; the previous one stays)."""


def checkpoint_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / CKPT_DIRNAME


def step_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step_{step:06d}.pt"


# ----------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python ``random`` states, as tensors and
    plain values so the checkpoint loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    # torch.cuda.is_initialized is unannotated in torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, this process sees %d: not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )


def _python_state_to_plain(state: tuple[Any, ...]) -> tuple[int, list[int], float | None]:
    version, internal, gauss_next = state
    return (version, list(internal), gauss_next)


# ----------------------------------------------------------------------------- saving


def fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a crash right after os.replace could lose it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform / filesystem
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``<dir>/ckpt.tmp``, fsync, then ``os.replace`` onto ``path``.

    Same directory = same filesystem, so the replace is an atomic rename. A failed write
    removes ``ckpt.tmp`` and raises ``CheckpointWriteError`` (see ``_write_failure``).
    """

    def write(f: Any) -> None:
        torch.save(obj, f)

    _atomic_write(path, write)


def _atomic_copy(src: Path, dst: Path) -> None:
    def write(fout: Any) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, fout, length=16 << 20)

    _atomic_write(dst, write)


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.parent / TMP_NAME
    try:
        with open_new(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)  # a partial file on a full disk only makes it fuller
        raise CheckpointWriteError(_write_failure(path, e, written)) from None
    fsync_dir(path.parent)


def _write_failure(path: Path, error: BaseException, written: int) -> str:
    """One line for a failed write. torch reports a full disk as ``[enforce fail at
    inline_container.cc:...] unexpected pos``; the free space on the filesystem tells."""
    free = shutil.disk_usage(path.parent).free
    full = getattr(error, "errno", None) == errno.ENOSPC or "unexpected pos" in str(error) or free < (1 << 20)
    mib = 1 << 20
    if full:
        return (
            f"no space left on {path.parent} writing {path.name}: {written / mib:.1f} MiB written before "
            f"the disk filled, {free / mib:.1f} MiB free; the previous checkpoint is intact"
        )
    return f"cannot write {path}: {first_line(error)}; the previous checkpoint is intact"


def list_step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``step_*.pt`` files, newest first."""
    found = []
    for p in ckpt_dir.glob("step_*.pt"):
        m = _STEP_RE.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def save_best_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``best.pt`` (atomically, replacing the previous best)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best = ckpt_dir / BEST_NAME
    atomic_torch_save({"format": FORMAT_VERSION, **state}, best)
    return best


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` as ``last.pt`` (atomically) plus a ``step_XXXXXX.pt`` copy, and keep only
    the ``keep`` newest step copies (0 = no copies). Returns the path of ``last.pt``."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT_VERSION, **state}
    last = ckpt_dir / LAST_NAME
    atomic_torch_save(state, last)
    if keep > 0:
        _atomic_copy(last, step_path(ckpt_dir, int(state["step"])))
        for _, old in list_step_checkpoints(ckpt_dir)[keep:]:
            old.unlink(missing_ok=True)
    return last


# ----------------------------------------------------------------------------- loading


def verify_checkpoint(state: Any, path: Path) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (got {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {state['format']} (this kvideo reads {FORMAT_VERSION})")
    return state


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify one file; any failure is a ``CheckpointError`` naming the file."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, garbage, unpickling error, I/O error...
        raise CheckpointError(f"{path}: unreadable ({_load_failure(e)})") from None
    return verify_checkpoint(state, path)


def _load_failure(error: BaseException) -> str:
    """Why ``torch.load`` refused, without torch's advice to retry with ``weights_only=False``:
    for a file that is not a kvideo checkpoint that advice means "run whatever code it holds"."""
    text = str(error)
    if "weights_only" in text or "Unsupported global" in text or "UnpicklingError" in type(error).__name__:
        return "not a kvideo checkpoint: it holds Python objects other than tensors and plain values"
    return first_line(error, typed=True)


def load_latest(
    ckpt_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest usable checkpoint: ``last.pt``, else the newest readable ``step_*.pt``.

    ``None`` when the directory holds no checkpoint at all (a fresh run). Raises
    ``CheckpointError`` when checkpoints exist but none is readable: silently starting over
    would throw away a run's progress.
    """
    candidates: list[Path] = []
    last = ckpt_dir / LAST_NAME
    if last.exists():
        candidates.append(last)
    candidates += [p for _, p in list_step_checkpoints(ckpt_dir)]
    if not candidates:
        return None
    errors = []
    for i, path in enumerate(candidates):
        try:
            state = read_checkpoint(path, map_location)
        except CheckpointError as e:
            log.warning("checkpoint %s", e)
            errors.append(str(e))
            continue
        if i > 0 or path.name != LAST_NAME:
            log.warning("falling back to %s (step %d): %s was not usable", path, state["step"], last.name)
        return state, path
    raise CheckpointError("no usable checkpoint in " + str(ckpt_dir) + ":\n  " + "\n  ".join(errors))
