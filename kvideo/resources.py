"""What this process may use of the machine: cores, memory, GPUs, processes sharing the node.

Torch-free and cheap (a few small files under /proc and /sys): config validation calls these,
and ``python train.py --cfg job`` must stay under a second.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def usable_cores() -> int:
    """Cores this process may run on: the scheduler's affinity mask (a SLURM allocation of 2
    CPUs on a 64-core node is 2), not ``os.cpu_count()``, which reports the whole node."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class MemoryLimit:
    """The most memory this process can get, and where that number comes from (for messages)."""

    bytes: int
    source: str


def meminfo_total(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """``MemTotal`` in bytes, or None where there is no /proc/meminfo (not Linux)."""
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _read_limit(file: Path) -> int | None:
    """One cgroup limit file: bytes, or None for "max" (v2 unlimited), unreadable or missing."""
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_dirs(cgroup_root: Path, self_cgroup: Path) -> list[tuple[Path, Path, str]]:
    """(this process's cgroup folder, the hierarchy's mount, the limit file's name) for the
    v2 hierarchy (line ``0::/path``) and the v1 memory controller (``N:memory:/path``)."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        rel = path.strip().lstrip("/")
        if hid == "0" and controllers == "":
            found.append((cgroup_root / rel, cgroup_root, "memory.max"))
        elif "memory" in controllers.split(","):
            base = cgroup_root / "memory"
            found.append((base / rel, base, "memory.limit_in_bytes"))
    return found


def cgroup_memory_limits(
    cgroup_root: str | Path = "/sys/fs/cgroup", self_cgroup: str | Path = "/proc/self/cgroup"
) -> list[tuple[int, Path]]:
    """Every memory limit that applies to this process: its own cgroup's and each ancestor's
    (limits nest: a job step inside a 16 GiB SLURM job gets at most 16 GiB whatever its own
    file says). A container that mounts only its own cgroup at the root (the process's path
    is not under the mount) is covered too, as the walk reads the mount's own file."""
    limits = []
    for own, base, name in _cgroup_dirs(Path(cgroup_root), Path(self_cgroup)):
        for folder in (own, *own.parents):
            if folder != base and base not in folder.parents:
                break
            value = _read_limit(folder / name)
            if value is not None:
                limits.append((value, folder / name))
    return limits


def memory_limit(
    *,
    meminfo: str | Path = "/proc/meminfo",
    cgroup_root: str | Path = "/sys/fs/cgroup",
    self_cgroup: str | Path = "/proc/self/cgroup",
) -> MemoryLimit | None:
    """The smaller of the machine's ``MemTotal`` and every cgroup limit over this process.

    Deliberately not ``MemAvailable``: that moves with whatever else runs at the moment (another
    sweep job, a browser, an unflushed page cache), so a config accepted at 9:00 would be refused
    at 9:05 and a busy CI machine would refuse the defaults. Against the limit a refusal says
    "cannot fit here even when the machine is idle", which is always true. (cgroup v1 reports
    "no limit" as 2^63 - 4096: larger than MemTotal, so the minimum ignores it.)
    """
    total = meminfo_total(meminfo)
    cgroups = cgroup_memory_limits(cgroup_root, self_cgroup)
    candidates = [(value, f"cgroup limit {file}") for value, file in cgroups]
    if total is not None:
        candidates.append((total, f"MemTotal in {meminfo}"))
    if not candidates:
        return None
    value, source = min(candidates, key=lambda c: c[0])
    return MemoryLimit(value, source)


def available_memory_bytes(**paths: str | Path) -> int | None:
    """``memory_limit(**paths).bytes``: what this process can ever get (None: unknown, not Linux)."""
    limit = memory_limit(**paths)
    return limit.bytes if limit else None


def processes_per_node(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Training processes sharing this node's memory, and the variable that says so.

    torchrun sets ``LOCAL_WORLD_SIZE``; an srun step sets ``SLURM_STEP_TASKS_PER_NODE`` (``4``,
    ``4(x2)`` or ``4,3``: the smallest count is taken, so the estimate stays a lower bound) only
    inside the step, so a plain ``python train.py`` in an allocation counts as one.
    """
    env = os.environ if environ is None else environ
    if env.get("LOCAL_WORLD_SIZE", "").isdigit():
        return max(1, int(env["LOCAL_WORLD_SIZE"])), "LOCAL_WORLD_SIZE"
    counts = re.findall(r"(\d+)(?:\(x\d+\))?", env.get("SLURM_STEP_TASKS_PER_NODE", ""))
    if "SLURM_PROCID" in env and counts:
        return max(1, min(int(c) for c in counts)), "SLURM_STEP_TASKS_PER_NODE"
    return 1, ""


def gpu_visible(environ: Mapping[str, str] | None = None, dev: str | Path = "/dev") -> bool:
    """Whether ``trainer.device=auto`` may resolve to a GPU, without importing torch: an NVIDIA
    (``/dev/nvidia0``...) or ROCm (``/dev/kfd``) device node, unless ``CUDA_VISIBLE_DEVICES``
    hides every GPU. A false "yes" (a CPU-only torch on a GPU machine) only makes the host
    memory check count less, never refuse more."""
    env = os.environ if environ is None else environ
    if env.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    dev = Path(dev)
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()
