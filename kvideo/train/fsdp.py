"""``trainer.strategy=fsdp``: FSDP2 shards the parameters, gradients and optimizer states.

``apply_fsdp`` applies ``torch.distributed.fsdp.fully_shard`` to each unit the model family
names (``ModelSpec.fsdp_units``: its transformer blocks, the vision tower's, then the LM's), then
to the whole model,
whose own unit holds the rest (embeddings, projector, norms, the head; a tied head shares its
embedding's parameter inside that one unit). A rank keeps 1/world_size of every parameter
between uses; a block's parameters are all-gathered right before it runs, forward and backward,
and freed after it, and its gradients are reduce-scattered, so each rank ends the backward with
its shard of the averaged gradient and its optimizer steps its shard only.

The module is changed in place (its parameters become ``DTensor`` shards with the same names),
so the optimizer, the freeze schedule and the checkpointer are built on the FSDP model.
Frozen parts and LoRA need nothing here: FSDP2 keeps ``requires_grad`` per parameter inside a
unit, reduce-scatters the gradients that exist, and reads ``requires_grad`` again at every
all-gather, so a ``model.freeze_schedule`` stage change applies at the next forward (DDP, by
contrast, must be rebuilt).

Every forward is a collective (the all-gathers): all ranks must run the same number of them,
which is why validation and caption generation run in lockstep on an FSDP model
(``kvideo.train.evaluate``, ``generate(synced=True)``); ``generate`` is registered as a forward
method so that it gathers the root unit's parameters as ``forward`` does.

On CUDA under bf16 autocast the units compute with bf16 copies of the parameters and reduce the
gradients in fp32 (``MixedPrecisionPolicy``); the fp32 shards stay the optimizer's master
weights. The model's own inputs are not cast (frame times in seconds would lose their precision
in bf16); autocast casts where the matmuls need it.
"""

from __future__ import annotations

import logging
from typing import cast

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
    register_fsdp_forward_method,
)

from kvideo.train.distributed import DistEnv

log = logging.getLogger("kvideo.train.loop")


def sync_gradients(model: nn.Module, enabled: bool) -> None:
    """Whether the backward reduce-scatters the gradients (on a micro-batch that ends a step)
    or accumulates them unreduced (DDP's ``no_sync``)."""
    cast(FSDPModule, model).set_requires_gradient_sync(enabled)


def apply_fsdp(
    model: nn.Module,
    env: DistEnv,
    *,
    units: list[nn.Module],
    compute_dtype: torch.dtype | None,
    cpu_offload: bool,
) -> str:
    """Shard ``model`` in place over every rank (see the module docstring); returns the log
    line that says what was sharded.

    ``units``: the modules sharded one by one before the root (the family's ``fsdp_units``);
    ``compute_dtype``: the autocast dtype (bf16 on CUDA turns on mixed precision);
    ``cpu_offload``: ``trainer.fsdp_cpu_offload``.
    """
    blocks = units
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    mixed = compute_dtype == torch.bfloat16 and env.device.type == "cuda"
    offload: OffloadPolicy = OffloadPolicy()
    if cpu_offload and env.device.type == "cuda":
        offload = CPUOffloadPolicy(pin_memory=True)
    elif cpu_offload:
        log.warning("trainer.fsdp_cpu_offload ignored: the run trains on the CPU, where the shards are")

    def policy(cast_inputs: bool) -> MixedPrecisionPolicy:
        if not mixed:
            return MixedPrecisionPolicy()
        return MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=cast_inputs
        )

    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy(True), offload_policy=offload)
    # The root's inputs are the batch: frames, masks, ids and frame times stay as they are.
    fully_shard(model, mesh=mesh, mp_policy=policy(False), offload_policy=offload)
    if hasattr(model, "generate"):
        register_fsdp_forward_method(model, "generate")
    params = sum(p.numel() for p in model.parameters())
    unit = f"{len(blocks)} transformer blocks + the root" if blocks else "one unit (the whole model)"
    extras = (", bf16 compute, fp32 gradient reduction" if mixed else "") + (
        ", shards offloaded to host memory" if cpu_offload and env.device.type == "cuda" else ""
    )
    if env.world_size == 1:
        line = (
            f"FSDP2 on one process: nothing is split; its {params:,} parameters are wrapped anyway, in "
            f"{unit}{extras}, so that its checkpoints are DCP ones that resume on any "
            "number of ranks"
        )
    else:
        line = f"FSDP2: {params:,} parameters sharded over {env.world_size} ranks in {unit}{extras}"
    if not blocks:
        line += (
            f"; {type(model).__name__} has no transformer blocks to shard one by one, so every "
            "forward gathers all its parameters at once"
        )
    return line
