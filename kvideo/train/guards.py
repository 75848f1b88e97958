"""Runs that cannot learn must stop and say so; two runs must never share a run dir.

* ``RunFailed``: raised by the loop when going on would only waste the allocation or damage
  what was saved: a non-finite loss (checked before the optimizer step, so the weights and
  the last checkpoint stay as they were), a share of skipped samples over
  ``data.max_skip_fraction``, a checkpoint that no longer fits on the disk. ``train.py`` turns
  it into one line and a non-zero exit; ``failed.json`` in the run dir says the same.
* ``RunDirLock``: an exclusive ``flock`` on ``<run_dir>/run.lock`` held for the whole run.
  The kernel drops it when the holder dies, however it dies, so there is no stale lock to
  clean up after a crash or ``kill -9``; a requeued SLURM job takes it again once the old one
  is gone. The file records who holds it, for the second run's message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from kvideo.files import NO_FOLLOW

LOCK_NAME = "run.lock"
FAILED_NAME = "failed.json"


class RunFailed(RuntimeError):
    """The run must stop with status ``failed`` (the message says why, in one line)."""


class RunDirBusy(RuntimeError):
    """Another live process holds the run dir."""


class RunDirLock:
    """``with RunDirLock(run_dir):`` — fails at once (``RunDirBusy``) if another run holds it."""

    def __init__(self, run_dir: Path | str) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirBusy(
                f"run dir {self.path.parent} is in use by another run ({holder}); wait for it to end "
                "or choose another hydra.run.dir"
            ) from None
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        if os.environ.get("SLURM_JOB_ID"):
            record["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    parts = [
        f"pid {record.get('pid', '?')} on {record.get('host', '?')}",
        f"since {record.get('since', '?')}",
    ]
    if "slurm_job_id" in record:
        parts.append(f"SLURM job {record['slurm_job_id']}")
    return ", ".join(parts)


class SkipBudget:
    """Stops a run whose samples are mostly skipped.

    Counts are global (summed over ranks by the caller) and judged over windows of at least
    ``min_samples`` samples, so one unlucky batch of bad files does not end a run while a
    dataset that is broken through and through (every decode timing out, a wrong mount)
    stops within the first windows instead of "training" on empty batches for hours.
    """

    def __init__(self, max_fraction: float, *, min_samples: int = 64) -> None:
        self.max_fraction = float(max_fraction)
        self.min_samples = int(min_samples)
        self.samples = 0
        self.skipped = 0

    def add(self, samples: int, skipped: int, *, step: int, last: bool = False) -> None:
        """Add a log window's global counts; raise ``RunFailed`` when a full window is over budget."""
        self.samples += int(samples)
        self.skipped += int(skipped)
        if self.samples < self.min_samples and not last:
            return
        share = self.skipped / self.samples if self.samples else 0.0
        samples, skipped = self.samples, self.skipped
        self.samples = self.skipped = 0
        if share > self.max_fraction:
            raise RunFailed(
                f"{skipped} of the last {samples} samples were skipped ({share:.0%} > "
                f"data.max_skip_fraction = {self.max_fraction:g}) at step {step}: see skipped.jsonl for "
                "the files and reasons"
            )


def write_failed(run_dir: Path, error: str, step: int | None, **details: Any) -> bool:
    """``failed.json``: what the sweep report and a person looking at the run dir read.

    The first failure wins: with several ranks, the rank that failed first writes it, and the
    ranks that only met its absence (a collective that lost a peer) leave it as it is. Returns
    whether this call wrote it. ``details``: more fields (``rank``, ``checkpoint``,
    ``traceback``); ``step`` is ``None`` when the run failed before its first step was known.
    """
    path = Path(run_dir) / FAILED_NAME
    record = {"status": "failed", "error": error, "step": step, **details}
    tmp = path.with_name(f"{FAILED_NAME}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a killed writer with this pid
    # A new file, never through a link planted at its name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    try:
        os.link(tmp, path)  # atomic and exclusive: never half a file, never a second writer's
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def clear_failed(run_dir: Path) -> None:
    """Forget an earlier attempt's ``failed.json`` (a resumed run starts with a clean slate; its
    own failure, if any, is the one to report). Its reason stays in ``train.log``."""
    (Path(run_dir) / FAILED_NAME).unlink(missing_ok=True)
