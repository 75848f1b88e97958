"""Process-group setup from torchrun or SLURM environments, and the few collectives the
trainer needs.

One code path for every launch style: ``python train.py`` (single process, no process group),
``torchrun --nproc_per_node N [--nnodes M ...] train.py`` (RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT), and ``srun`` / submitit with more than one task in the step, on one
node or several (SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID: the step's view, which
is what ``submitit.JobEnvironment`` reports from the allocation's variables under submitit, whose
one srun spans the allocation; the master is the first host of the step's node list, where task
0 runs, and the port is derived from SLURM_JOB_ID, so every task of the job computes the same one
without talking, concurrent jobs on one node do not collide, and a requeued job gets its port
back).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from kvideo.config.checks import require_choice
from kvideo.config.trainer import BACKENDS, DEVICES

log = logging.getLogger(__name__)

# Ports derived from SLURM_JOB_ID land in [BASE, BASE + SPAN): above the well-known and
# registered ranges most services use, below the Linux ephemeral range (32768+).
SLURM_PORT_BASE = 12000
SLURM_PORT_SPAN = 20000


@dataclass(frozen=True)
class LaunchEnv:
    """What the environment says about this process's place in the job (no side effects)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # "single" | "torchrun" | "slurm"


@dataclass(frozen=True)
class DistEnv:
    """This process's rank, device and whether it is the one that writes files."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    is_main: bool
    backend: str | None = None  # None: no process group (single process)
    owns_group: bool = False  # True when init_distributed created the group (and must destroy it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """First hostname of a SLURM node list: ``scontrol show hostnames`` when available,
    else the simple forms are parsed (``a,b``, ``node[01-04,07]``, ``gpu[3,5]-ib``)."""
    nodelist = nodelist.strip()
    if not nodelist:
        raise ValueError("SLURM_JOB_NODELIST is empty")
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass  # fall through to parsing
    # The first top-level item: commas inside [...] do not split.
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            end = i
            break
    item = nodelist[:end]
    match = re.fullmatch(r"([^\[]*)\[([^\]]+)\](.*)", item)
    if not match:
        return item
    prefix, ranges, suffix = match.groups()
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}{suffix}"


def detect_launch(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read the launcher's variables; torchrun's win over SLURM's (torchrun inside an
    allocation sets its own ranks), and a SLURM job with one task is a single process."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            world_size=int(env["WORLD_SIZE"]),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    # SLURM_STEP_NUM_TASKS describes the srun step this process belongs to and is set only
    # inside one; SLURM_NTASKS describes the whole allocation. A plain `python train.py` in an
    # `salloc -n 4` shell, or in an `sbatch -n 4` script (whose batch step even sets
    # SLURM_PROCID=0, checked on a real cluster), is one process and must not wait for 3 peers.
    ntasks = env.get("SLURM_STEP_NUM_TASKS")
    if "SLURM_PROCID" in env and ntasks and int(ntasks) > 1:
        job_id = int(re.sub(r"\D", "", env.get("SLURM_JOB_ID", "0")) or 0)
        port = int(env.get("MASTER_PORT", SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN))
        # The step's nodes: a step may use part of the allocation (srun -N1 in a 2-node job).
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "127.0.0.1")
        addr = env.get("MASTER_ADDR") or first_host(nodelist)
        return LaunchEnv(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            world_size=int(ntasks),
            master_addr=addr,
            master_port=port,
            source="slurm",
        )
    return LaunchEnv()


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``trainer.device`` -> a concrete device; ``cuda`` without CUDA is a config error."""
    require_choice("trainer.device", preference, DEVICES)
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "trainer.device=cuda but CUDA is not available in this process "
            "(torch.cuda.is_available() is False); use trainer.device=auto or trainer.device=cpu"
        )
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def resolve_backend(preference: str, device: torch.device) -> str:
    """``trainer.backend`` -> ``gloo`` or ``nccl``; NCCL moves CUDA tensors only, so it is
    refused (with the fix) where the training device is not a GPU."""
    require_choice("trainer.backend", preference, BACKENDS)
    if preference == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if preference == "nccl" and device.type != "cuda":
        why = (
            "this machine has no CUDA GPU (torch.cuda.is_available() is False)"
            if not torch.cuda.is_available()
            else "the run trains on the CPU (trainer.device=cpu)"
        )
        raise RuntimeError(
            f"trainer.backend=nccl needs the model on a GPU, and {why}: "
            "use trainer.backend=gloo (or auto) with trainer.device=cpu"
        )
    return preference


def init_distributed(
    device_preference: str = "auto",
    environ: Mapping[str, str] | None = None,
    *,
    backend: str = "auto",
    group_of_one: bool = False,
) -> DistEnv:
    """Set up this process: device, and a process group when the launch has > 1 process.

    ``backend`` as ``trainer.backend`` (``resolve_backend``); ``group_of_one``: a single process
    gets a process group of its own too (FSDP2 shards over a device mesh, which needs one). An
    already-initialised group (a test harness, a wrapper script) is reused and left for its
    owner to destroy.
    """
    launch = detect_launch(environ)
    device = resolve_device(device_preference, launch.local_rank)
    backend = resolve_backend(backend, device)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        return DistEnv(rank, launch.local_rank, world, device, rank == 0, dist.get_backend(), False)
    if launch.world_size <= 1:
        if not group_of_one:
            return DistEnv(0, 0, 1, device, True, None, False)
        # An in-memory store: no port to pick, nothing another process could join.
        store = dist.HashStore()  # type: ignore[attr-defined]
        dist.init_process_group(backend=backend, store=store, rank=0, world_size=1)
        return DistEnv(0, 0, 1, device, True, backend, True)
    # env:// reads these; SLURM launches do not set them, so fill them in (never override).
    os.environ.setdefault("MASTER_ADDR", launch.master_addr)
    os.environ.setdefault("MASTER_PORT", str(launch.master_port))
    os.environ.setdefault("RANK", str(launch.rank))
    os.environ.setdefault("WORLD_SIZE", str(launch.world_size))
    os.environ.setdefault("LOCAL_RANK", str(launch.local_rank))
    log.info(
        "init process group: backend=%s rank=%d/%d local_rank=%d master=%s:%s (%s)",
        backend,
        launch.rank,
        launch.world_size,
        launch.local_rank,
        os.environ["MASTER_ADDR"],
        os.environ["MASTER_PORT"],
        launch.source,
    )
    dist.init_process_group(
        backend=backend, init_method="env://", rank=launch.rank, world_size=launch.world_size
    )
    return DistEnv(launch.rank, launch.local_rank, launch.world_size, device, launch.rank == 0, backend, True)


def cleanup(env: DistEnv) -> None:
    """Destroy the process group if this module created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel when there is more than one process, else the model itself."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user module under DDP and/or ``torch.compile`` wrappers (for state_dict / eval)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            # nn.Module.__getattr__ is typed Tensor | Module; _orig_mod is the compiled Module
            model = cast(nn.Module, model._orig_mod)
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _collective_device(env: DistEnv) -> torch.device:
    return env.device if env.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise sum over ranks (float64, so counts stay exact)."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device(env))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_reduce_counts(counts: Mapping[str, int], keys: list[str], env: DistEnv) -> dict[str, int]:
    """Sum per-key counters over ranks. ``keys`` must be the same list on every rank (use a
    fixed vocabulary such as ``SKIP_REASONS``): a collective needs equal shapes everywhere."""
    summed = all_reduce_sum([float(counts.get(k, 0)) for k in keys], env)
    return {k: int(v) for k, v in zip(keys, summed, strict=True)}


def any_ranks(flags: list[bool], env: DistEnv) -> list[bool]:
    """Each flag true on every rank when it is true on at least one (e.g. a signal that hit
    one node), all in one collective."""
    if not env.distributed:
        return [bool(f) for f in flags]
    return [v > 0 for v in all_reduce_sum([1.0 if f else 0.0 for f in flags], env)]


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj``, in rank order (picklable objects; small payloads only)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
