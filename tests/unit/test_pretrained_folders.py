"""``kvideo.hf_folders``: where a model folder is, without the network, and what compose
time reads from it (torch-free)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kvideo.hf_folders import (
    image_statistics,
    lm_context_length,
    lm_geometry,
    parameter_count,
    resolve_model_folder,
    tower_geometry,
    tower_parameter_prefix,
)
from tests.helpers.hf_models import cache_snapshot


def test_a_cached_hub_id_resolves_to_its_snapshot_offline(
    tiny_hf_parts: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = cache_snapshot(tmp_path / "hub", "someone/tiny-lm", tiny_hf_parts[1])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_folder("model.lm_path", "someone/tiny-lm") == snapshot
    with pytest.raises(
        ValueError, match=r"model\.lm_path='someone/other' is neither a local folder nor in the"
    ):
        resolve_model_folder("model.lm_path", "someone/other")


def test_folders_that_are_not_models_are_named_with_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"model\.vision_path='.*' is not a Hugging Face model folder: expected"
    ):
        resolve_model_folder("model.vision_path", str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is a file; expected a model folder holding config\.json"):
        resolve_model_folder("model.vision_path", str(tmp_path / "weights.bin"))
    with pytest.raises(ValueError, match=r"does not exist"):
        resolve_model_folder("model.vision_path", str(tmp_path / "nothing" / "here"))


def test_what_compose_time_reads_from_the_folders(tiny_hf_parts: tuple[Path, Path]) -> None:
    vision, lm = tiny_hf_parts
    tower = tower_geometry("model.vision_path", vision)  # a two-tower SigLIP folder: its vision_config
    assert (tower.image_size, tower.patch_size, tower.width, tower.depth, tower.grid) == (64, 16, 64, 2, 4)
    assert lm_context_length("model.lm_path", lm) == 512
    assert (lm_geometry("model.lm_path", lm).width, lm_geometry("model.lm_path", lm).depth) == (64, 2)
    assert image_statistics("model.vision_path", vision) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    # parameter counts from the safetensors headers match the loaded models
    from transformers import AutoModelForCausalLM, SiglipVisionModel

    assert parameter_count(lm) == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(lm).parameters()
    )
    tower_params = sum(p.numel() for p in SiglipVisionModel.from_pretrained(vision).parameters())
    assert parameter_count(vision, prefix=tower_parameter_prefix(vision)) == tower_params


def test_a_tower_without_an_image_processor_config_is_refused(
    tiny_hf_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "tower"
    shutil.copytree(tiny_hf_parts[0], folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match=r"model\.vision_path: .* has no preprocessor_config\.json"):
        image_statistics("model.vision_path", folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"has no image_size / img_size; expected a vision model's config"):
        tower_geometry("model.vision_path", folder)


@pytest.mark.parametrize(
    ("key", "values", "message"),
    [
        ("image_mean", ["0.5", "0.5", "0.5"], r"image_mean must be 3 finite numbers \(got \['0\.5'"),
        ("image_std", [0.5, float("nan"), 0.5], r"image_std must be 3 finite numbers"),
        ("image_std", [0.5, 0, 0.5], r"image_std must be positive \(got \[0\.5, 0, 0\.5\]\)"),
    ],
)
def test_pixel_statistics_that_would_poison_every_frame_are_refused(
    tiny_hf_parts: tuple[Path, Path], tmp_path: Path, key: str, values: list, message: str
) -> None:
    """Strings failed in float() without a file named; a zero or NaN std was accepted and the
    run's first NaN loss was blamed on trainer.lr."""
    folder = tmp_path / "tower"
    shutil.copytree(tiny_hf_parts[0], folder)
    file = folder / "preprocessor_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), key: values}))
    with pytest.raises(ValueError, match=rf"^model\.vision_path: {file}'s {message}"):
        image_statistics("model.vision_path", folder)


def test_a_safetensors_header_claiming_exabytes_is_refused_naming_the_file(tmp_path: Path) -> None:
    """It used to be read as asked (2^62 bytes): a MemoryError traceback at compose time."""
    bomb = tmp_path / "model.safetensors"
    bomb.write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match=rf"^{bomb}: not a safetensors file: its header claims 4,611,"):
        parameter_count(tmp_path)
