"""kvideo's model families, one module each; importing one registers its ``ModelSpec`` in
``kvideo.registry.MODEL_FAMILIES`` (the ``kvideo.models`` entry points name this package)."""

from kvideo.model.families import builtin, hf, pretrained

__all__ = ["builtin", "hf", "pretrained"]
