"""``kvideo.model.spec``: the trainer and the inference code reach a model family through its
``ModelSpec`` in ``MODEL_FAMILIES``, so a new family is one module plus one registration."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from torch import nn

from kvideo.config import ModelConfig
from kvideo.model import build_model, model_spec
from kvideo.model.spec import ModelSizes, ModelSpec
from kvideo.registry import MODEL_FAMILIES
from tests.helpers.configs import tiny_model


def test_each_builtin_family_has_a_spec_named_as_its_model_family() -> None:
    assert MODEL_FAMILIES.names() == ["builtin", "hf", "pretrained"]
    for family in MODEL_FAMILIES.names():
        spec = model_spec(family)
        assert spec.family == family
        assert spec.parts == ("vision", "projector", "lm")


def test_the_builtin_specs_fsdp_units_are_the_models_transformer_blocks() -> None:
    cfg = tiny_model(lm_depth=2)
    model: Any = build_model(cfg, vocab_size=40, max_frames=2, frame_size=32)
    units = model_spec("builtin").fsdp_units(model)
    assert units == [*model.vision.blocks, *model.lm.blocks]
    assert model_spec("builtin").checkpoint_keys(model, None) is None


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch) -> list[ModelSizes]:
    """A family registered in this process (removed after the test): the builtin model under
    another name, recording what it was built for."""
    built: list[ModelSizes] = []

    def build(cfg: ModelConfig, sizes: ModelSizes) -> nn.Module:
        built.append(sizes)
        return model_spec("builtin").build(cfg, sizes)

    toy = dataclasses.replace(model_spec("builtin"), family="toy", build=build)
    monkeypatch.setitem(MODEL_FAMILIES._entries, "toy", toy)
    return built


def test_a_registered_family_is_a_config_choice_and_builds_through_its_spec(
    toy_family: list[ModelSizes],
) -> None:
    cfg = tiny_model(family="toy")  # validates: the registry offers "toy"
    model = build_model(cfg, vocab_size=40, max_frames=2, frame_size=32, resize="square")
    assert isinstance(model, nn.Module)
    assert toy_family == [ModelSizes(40, 2, 32, "square")]
    assert isinstance(model_spec("toy"), ModelSpec)


def test_an_unknown_family_is_refused_naming_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"model\.family must be one of \['builtin', 'hf', 'pretrained'\] \(got 'nope'\)"
    ):
        tiny_model(family="nope")


def test_a_family_that_cannot_pack_refuses_packing_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    unpacked = dataclasses.replace(model_spec("builtin"), family="toy", packs=False)
    monkeypatch.setitem(MODEL_FAMILIES._entries, "toy", unpacked)
    with pytest.raises(ValueError, match=r"^data.packing=true is not supported for model.family=toy; use"):
        build_model(
            tiny_model(family="toy"), vocab_size=40, max_frames=2, frame_size=32, max_tokens_per_row=0
        )
