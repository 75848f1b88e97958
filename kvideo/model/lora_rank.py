"""A LoRA rank no target layer can use.

LoRA adds ``B @ A`` (``out x r`` times ``r x in``) to a weight, an update of rank at most
``min(in, out)``. A ``model.lora_rank`` above that for every target adds ``r * (in + out)``
parameters per layer and no capacity: a typo (``lora_rank=4096`` for 64-wide layers) that
trained without a word. It is refused with the largest rank that means something.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def check_lora_rank(rank: int, layers: Iterable[tuple[str, nn.Module]]) -> None:
    """Raise ``ValueError`` when ``rank`` exceeds ``min(in, out)`` of every ``nn.Linear`` in
    ``layers`` (``(name, module)`` of the LoRA targets)."""
    widths = {name: (m.in_features, m.out_features) for name, m in layers if isinstance(m, nn.Linear)}
    if not widths:
        return
    name, (fan_in, fan_out) = max(widths.items(), key=lambda item: min(item[1]))
    usable = min(fan_in, fan_out)
    if rank > usable:
        raise ValueError(
            f"model.lora_rank={rank} exceeds what any LoRA target can use: the widest, {name} "
            f"({fan_in} -> {fan_out}), takes an update of rank at most {usable}; use "
            f"model.lora_rank <= {usable}"
        )
