"""Hydra composition: every group option composes and validates; overrides address one object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from kvideo.config import KVideoConfig, config_from, register_configs
from kvideo.preflight import checked
from kvideo.preflight.memory import check_fits_in_memory
from kvideo.resources import MemoryLimit
from tests.helpers.hf_models import hf_cli_overrides
from tests.helpers.paths import CONF_DIR
from tests.helpers.pretrained_vlms import pretrained_cli_overrides

register_configs()


def compose_cfg(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_default_composes_to_the_embedded_sample() -> None:
    cfg = config_from(compose_cfg())
    assert isinstance(cfg, KVideoConfig)
    assert cfg.video.dataset_type == "sample"
    assert cfg.video.sampling_policy == "uniform"
    assert cfg.decoder.name == "decord_cpu"


@pytest.mark.parametrize("option", group_options("video/sampling"))
def test_each_sampling_option(option: str) -> None:
    cfg = config_from(compose_cfg([f"video/sampling={option}"]))
    assert cfg.video.sampling_policy == option


@pytest.mark.parametrize("option", group_options("video/dataset"))
def test_each_dataset_option(option: str) -> None:
    cfg = config_from(compose_cfg([f"video/dataset={option}"]))
    assert cfg.video.dataset_type == option


@pytest.mark.parametrize("option", group_options("video/decoder"))
def test_each_decoder_option(option: str) -> None:
    assert config_from(compose_cfg([f"video/decoder={option}"])).decoder.name == option


@pytest.mark.parametrize("option", group_options("model"))
def test_each_model_option(option: str, tiny_hf_parts: tuple[Path, Path], tiny_vlms: dict[str, Path]) -> None:
    # small_vlm is sized for 224 px frames; the token budget must still fit. hf_vlm takes its
    # frame size from the tower (64 px here).
    overrides = [f"model={option}", "video.frame_size=224"]
    if option == "hf_vlm":
        overrides = hf_cli_overrides(*tiny_hf_parts)
    if option == "pretrained":
        overrides = pretrained_cli_overrides(tiny_vlms["qwen2_5_vl"])
    cfg = config_from(compose_cfg(overrides))
    assert cfg.model.name == option


@pytest.mark.parametrize("option", group_options("trainer"))
def test_each_trainer_option(option: str) -> None:
    assert isinstance(config_from(compose_cfg([f"trainer={option}"])), KVideoConfig)


def test_group_and_field_override_address_the_same_flat_node() -> None:
    cfg = compose_cfg(["video/sampling=molmo2", "video.fps=1"])
    assert cfg.video.sampling_policy == "molmo2"
    assert cfg.video.fps == 1.0
    assert "sampling" not in cfg.video  # group files land in video, not video.sampling
    cfg = compose_cfg(["video.sampling_policy=qwen"])
    assert config_from(cfg).video.sampling_policy == "qwen"


@pytest.mark.parametrize("option", ["molmo2", "molmo2_no_max_fps"])
def test_molmo2_options_drop_the_min_frames_padding_unless_overridden(option: str) -> None:
    # Molmo2 has no minimum frame count: by default its options must not pad short clips.
    assert config_from(compose_cfg([f"video/sampling={option}"])).video.min_frames == 1
    cfg = config_from(compose_cfg([f"video/sampling={option}", "video.min_frames=4"]))
    assert cfg.video.min_frames == 4


def test_unknown_key_is_a_composition_error() -> None:
    with pytest.raises(ConfigCompositionException, match="bogus"):
        compose_cfg(["video.bogus=1"])


def test_wrong_type_is_a_composition_error() -> None:
    with pytest.raises(ConfigCompositionException, match=r"video\.max_frames"):
        compose_cfg(["video.max_frames=many"])


def test_post_init_rules_fire_after_compose() -> None:
    cfg = compose_cfg(["video.fps=0"])  # composing alone does not validate...
    with pytest.raises(ValueError, match=r"video.fps must be positive \(got 0.0\)"):
        config_from(cfg)  # ...converting does


def test_token_budget_at_compose_time() -> None:
    cfg = compose_cfg(["video.max_frames=64"])
    with pytest.raises(ValueError, match=r"= 64 \* 16 \+ 48 = 1072 > model.max_seq_len \(384\)"):
        config_from(cfg)


def test_env_interpolation_in_dataset_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KVIDEO_MANIFEST", str(tmp_path / "m.jsonl"))
    cfg = compose_cfg(["video/dataset=manifest"])
    video: Any = OmegaConf.to_container(cfg.video, resolve=True)
    assert video["data_root"] == str(tmp_path / "m.jsonl")


# ----------------------------------------------------------------------------- memory estimate

LAPTOP = MemoryLimit(16 * 2**30, "a 16 GiB laptop")
GROUPS = ("video/dataset", "video/sampling", "video/decoder", "model", "trainer")
OPTIONS = [(group, option) for group in GROUPS for option in group_options(group)]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_fits_this_machine_and_a_16_gib_laptop_training_on_its_cpu(
    group: str, option: str, tiny_hf_parts: tuple[Path, Path], tiny_vlms: dict[str, Path]
) -> None:
    extra = ["video.frame_size=224"] if group == "model" else []  # small_vlm is sized for 224 px
    if (group, option) == ("model", "hf_vlm"):
        extra = hf_cli_overrides(*tiny_hf_parts)
    if (group, option) == ("model", "pretrained"):
        extra = pretrained_cli_overrides(tiny_vlms["qwen2_5_vl"])
    cfg = config_from(compose_cfg([f"{group}={option}", *extra]))  # this machine
    check_fits_in_memory(cfg, limit=LAPTOP, processes=(1, ""), on_host=True)


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_slurm_sweep_points_fit_the_jobs_mem_gb_not_the_submitting_host() -> None:
    big = ["hydra/launcher=slurm", "model=small_vlm", "video.frame_size=224", "trainer.device=cpu"]  # 5.2 GiB
    checked(compose_with_hydra(big))  # mem_gb 8 by default
    with pytest.raises(ValueError, match=r"host memory: .* > 90% of 1\.0 GiB \(hydra\.launcher\.mem_gb=1\)"):
        checked(compose_with_hydra([*big, "hydra.launcher.mem_gb=1"]))
