"""Registries: decorator registration, lookup errors that list the choices."""

from __future__ import annotations

import pytest

from kvideo.registry import (
    DATASETS,
    DECODERS,
    SAMPLING_POLICIES,
    Registry,
    list_decoders,
    list_sampling_policies,
    list_video_datasets,
)


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
    list_decoders()  # loads every built-in plugin, so the choices are the real ones
    with pytest.raises(KeyError) as err:
        registry.get("bogus")
    assert err.value.args[0] == f"unknown {key} 'bogus'; choices: {registry.names()}"


def test_conflicting_registration_is_an_error() -> None:
    reg: Registry = Registry("widget")
    reg.register("x")(len)
    reg.register("x")(len)  # the same object again (module re-import) is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(abs)


def test_builtins_are_registered() -> None:
    assert {"webvid", "manifest", "sample"} <= set(list_video_datasets())
    assert {"uniform", "molmo2", "qwen", "random_segment"} <= set(list_sampling_policies())
    assert {"decord_cpu", "decord_gpu"} <= set(list_decoders())
