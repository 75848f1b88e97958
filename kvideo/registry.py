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
    """A named collection filled by a decorator at import time.

    kind: what an entry is, for registration errors ("sampling policy").
    key: the config key that names an entry (``video.sampling_policy``), so an unknown name
        points at the setting to fix; defaults to ``kind`` for registries no config addresses.
    """

    def __init__(self, kind: str, *, key: str | None = None) -> None:
        self.kind = kind
        self.key = key or kind
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
        """The entry registered as ``name``; a KeyError names the config key and the choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.key} {name!r}; choices: {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


DATASETS: Registry[Callable] = Registry("video dataset", key="video.dataset_type")
SAMPLING_POLICIES: Registry[Callable] = Registry("sampling policy", key="video.sampling_policy")
DECODERS: Registry[Callable] = Registry("decoder", key="decoder.name")

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
