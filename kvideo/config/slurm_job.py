"""What a SLURM job of the ``slurm`` launcher asks for, per node and per task, by default.

``conf/hydra/launcher/slurm.yaml`` reads these through resolvers, so the request follows the
run's own config (GPUs per node, decode workers) instead of restating it. The sizes are for GPU
nodes: one task per GPU, each task one training process with its decode workers. A CPU-only job
(no GPUs per node) is one task per node. Every value can still be set outright
(``hydra.launcher.mem_gb=...``) or from the environment (``KVIDEO_SLURM_*``).
"""

from __future__ import annotations

# Host memory per task, GiB. A GPU task holds a large LM's weights on the host while they load
# (a 7B LM is 14 GiB in bf16; under FSDP every rank loads them before sharding), CUDA's host-side
# libraries (~3 GiB per process) and its decode workers' prefetched batches: 32 GiB. GPU nodes
# have more host memory than that per GPU (256 GiB per GPU on an 8-GPU DGX H100). A CPU-only task
# of the embedded default peaked at 1.44 GiB (RSS summed over the training process and its 2
# decode workers, 30 steps, measured on 2 cores); 8 GiB leaves room for larger frames and batches.
MEM_GB_PER_GPU_TASK = 32
MEM_GB_PER_CPU_TASK = 8


def tasks_per_node(gpus_per_node: int | None) -> int:
    """One SLURM task per GPU, and one task on a CPU-only allocation."""
    return max(1, int(gpus_per_node or 0))


def cpus_per_task(num_workers: int | None) -> int:
    """The training process plus its ``trainer.num_workers`` decode workers, one CPU each."""
    return int(num_workers or 0) + 1


def mem_gb_per_node(tasks: int | None, gpus_per_node: int | None) -> int:
    """``hydra.launcher.mem_gb`` (SLURM's ``--mem``, per node): the node's tasks' share each."""
    per_task = MEM_GB_PER_GPU_TASK if int(gpus_per_node or 0) > 0 else MEM_GB_PER_CPU_TASK
    return max(1, int(tasks or 1)) * per_task
