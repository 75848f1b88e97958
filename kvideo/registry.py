"""Name -> implementation registries for datasets, sampling policies, decoders and model families.

Configs refer to implementations by string (``video.dataset_type=webvid``). A name is
selectable when it is either

* registered in this process: ``@DATASETS.register("my_clips")`` in a module already imported;
* or declared as a package entry point in the registry's group (``kvideo.datasets``,
  ``kvideo.sampling``, ``kvideo.decoders``, ``kvideo.models``): name -> the module whose import registers it.
  kvideo declares its built-ins this way (pyproject.toml), and a separate distribution
  declares its own the same way, so it becomes selectable without editing kvideo.

Why entry points: config validation (``VideoConfig.__post_init__``) checks names on every
compose, ``train.py --cfg job`` included. Reading entry-point metadata imports no plugin
module, so the config layer depends on none of them (no numpy, torch, decord or av to
list the choices); ``get`` imports a plugin's module the first time its name is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:  # types only: the plugin packages import this module (and torch, numpy)
    from kvideo.data.rows import ClipRow
    from kvideo.decode.types import VideoDecoder
    from kvideo.model.spec import ModelSpec

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection: entries registered by a decorator, plus entry points not yet imported.

    kind: what an entry is, for registration errors ("sampling policy").
    key: the config key that names an entry (``video.sampling_policy``), so an unknown name
        points at the setting to fix; defaults to ``kind`` for registries no config addresses.
    group: the entry-point group whose names this registry offers (``None``: registered only).
    builtin_module: the module that registers kvideo's own entries. Imported only when no
        entry point of ``group`` names it, i.e. kvideo itself is not installed (a bare source
        checkout on ``PYTHONPATH``): then the built-ins are found the old way, by import.

    Entry points are read once per registry, on first use: a distribution installed while a
    process runs is seen by the next process.
    """

    def __init__(
        self,
        kind: str,
        *,
        key: str | None = None,
        group: str | None = None,
        builtin_module: str | None = None,
    ) -> None:
        self.kind = kind
        self.key = key or kind
        self.group = group
        self.builtin_module = builtin_module
        self._entries: dict[str, T] = {}
        self._declared: dict[str, list[str]] | None = None  # name -> modules, from entry points

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
        """The entry registered as ``name``, importing its entry point's module on first use;
        a KeyError names the config key and the choices."""
        if name not in self._entries and name in self.declared():
            self._import_declaring(name)
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.key} {name!r}; choices: {self.names()}") from None

    def names(self) -> list[str]:
        """Registered names and entry-point names, sorted; imports no plugin module."""
        return sorted(self._entries.keys() | self.declared().keys())

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self.declared()

    def declared(self) -> dict[str, list[str]]:
        """Entry-point name -> the modules that declare it (metadata only, nothing imported)."""
        if self._declared is None:
            declared: dict[str, list[str]] = {}
            if self.group:
                for point in metadata.entry_points(group=self.group):
                    modules = declared.setdefault(point.name, [])
                    if point.module not in modules:
                        modules.append(point.module)
            self._declared = declared
            if self.builtin_module and not any(self.builtin_module in m for m in declared.values()):
                importlib.import_module(self.builtin_module)  # kvideo not installed: see the class doc
        return self._declared

    def _import_declaring(self, name: str) -> None:
        modules = self.declared()[name]
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ImportError(
                    f"{self.key} {name!r}: its entry point ({self.group}) names module {module!r}, "
                    f"which does not import: {e}"
                ) from e
        if name not in self._entries:
            raise ImportError(
                f"{self.key} {name!r}: its entry point ({self.group}) names {modules}, but importing "
                f"{'it' if len(modules) == 1 else 'them'} registered no {self.kind} {name!r}"
            )


DATASETS: Registry[Callable[..., list[ClipRow]]] = Registry(
    "video dataset", key="video.dataset_type", group="kvideo.datasets", builtin_module="kvideo.data.datasets"
)
SAMPLING_POLICIES: Registry[Callable[..., list[float]]] = Registry(
    "sampling policy", key="video.sampling_policy", group="kvideo.sampling", builtin_module="kvideo.sampling"
)
DECODERS: Registry[Callable[..., VideoDecoder]] = Registry(
    "decoder", key="decoder.name", group="kvideo.decoders", builtin_module="kvideo.decode"
)
MODEL_FAMILIES: Registry[ModelSpec] = Registry(
    "model family", key="model.family", group="kvideo.models", builtin_module="kvideo.model.families"
)
