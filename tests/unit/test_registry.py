"""Registries: decorator registration, lookup errors that list the choices, and the built-ins
declared as entry points (name -> module) exactly as their modules register them.

Plugins found through entry points (names without imports, import on first use, a distribution
outside kvideo) are tested in ``tests/integration/test_plugins.py``."""

from __future__ import annotations

import pytest

from kvideo.registry import DATASETS, DECODERS, SAMPLING_POLICIES, Registry


def test_register_and_lookup() -> None:
    reg: Registry = Registry("widget")

    @reg.register("a")
    def a() -> str:
        return "a"

    assert reg.get("a") is a
    assert "a" in reg and "b" not in reg
    assert reg.names() == ["a"]


def test_unknown_name_lists_choices() -> None:
    reg: Registry = Registry("widget")
    reg.register("x")(object())
    reg.register("y")(object())
    with pytest.raises(KeyError, match=r"unknown widget 'z'; choices: \['x', 'y'\]"):
        reg.get("z")


def test_unknown_name_names_the_config_key_that_selects_it() -> None:
    reg: Registry = Registry("widget", key="shop.widget_type")
    reg.register("x")(object())
    with pytest.raises(KeyError, match=r"unknown shop\.widget_type 'z'; choices: \['x'\]"):
        reg.get("z")


@pytest.mark.parametrize(
    ("registry", "key"),
    [
        (DATASETS, "video.dataset_type"),
        (SAMPLING_POLICIES, "video.sampling_policy"),
        (DECODERS, "decoder.name"),
    ],
)
def test_each_builtin_registry_names_its_config_key(registry: Registry, key: str) -> None:
    with pytest.raises(KeyError) as err:
        registry.get("bogus")
    assert err.value.args[0] == f"unknown {key} 'bogus'; choices: {registry.names()}"


def test_conflicting_registration_is_an_error() -> None:
    reg: Registry = Registry("widget")
    reg.register("x")(len)
    reg.register("x")(len)  # the same object again (module re-import) is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(abs)


def test_builtins_are_offered() -> None:
    assert {"webvid", "manifest", "sample"} <= set(DATASETS.names())
    policies = {"uniform", "molmo2", "molmo2_no_max_fps", "qwen", "random_segment"}
    assert policies <= set(SAMPLING_POLICIES.names())
    assert {"decord_cpu", "decord_gpu", "pyav_cpu"} <= set(DECODERS.names())
