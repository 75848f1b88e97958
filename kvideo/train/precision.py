"""Mixed precision: what ``trainer.precision`` means on this device, decided once.

A module of its own because two components run the model and must agree on the dtype: the
training step and validation (``evaluate`` takes the same context as ``autocast``).
"""

from __future__ import annotations

import contextlib

import torch


def resolve_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``trainer.precision`` -> autocast dtype (``None`` = plain fp32).

    ``auto`` takes bf16 only where the GPU computes it natively; fp16 is never chosen, since
    it would need a gradient scaler the loop does not have.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError(
                "trainer.precision=bf16 but this GPU does not support bfloat16; use trainer.precision=fp32"
            )
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class Autocast:
    """``with autocast():`` runs the block under the run's autocast dtype; plain fp32 when
    ``dtype`` is ``None`` (the context is then a no-op, not an fp32 autocast region)."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.dtype = resolve_autocast_dtype(precision, device)
        self.device_type = device.type

    def __call__(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)
