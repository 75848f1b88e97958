"""Name -> implementation registries for datasets, sampling policies and decoders.

Configs refer to implementations by string (``video.dataset_type=webvid``) so a
plugin only has to be imported to become selectable; validation checks names
against the *live* registries so the error lists whatever is registered now.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection filled by a decorator at import time."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@DATASETS.register("webvid")``. Re-registering a name is an error
        because two plugins silently shadowing each other is a debugging nightmare."""

        def decorator(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered ({existing!r})")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choices: {self.names()}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


DATASETS: Registry[Callable] = Registry("video dataset")
SAMPLING_POLICIES: Registry[Callable] = Registry("sampling policy")
DECODERS: Registry[Callable] = Registry("decoder")

# Modules whose import registers the built-in implementations.
_BUILTIN_PLUGINS = ("kvideo.sampling", "kvideo.data.datasets", "kvideo.decode")


def load_builtin_plugins() -> None:
    """Import the built-in plugin modules so their decorators have run."""
    for module in _BUILTIN_PLUGINS:
        importlib.import_module(module)


def list_video_datasets() -> list[str]:
    load_builtin_plugins()
    return DATASETS.names()


def list_sampling_policies() -> list[str]:
    load_builtin_plugins()
    return SAMPLING_POLICIES.names()


def list_decoders() -> list[str]:
    load_builtin_plugins()
    return DECODERS.names()
