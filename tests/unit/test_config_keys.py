"""``kvideo.config.keys``: a key the schema lacks is refused with the one meant, except in a
run's own saved config, where it is a setting of the kvideo version that wrote it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kvideo.config import KVideoConfig, config_from
from kvideo.config.keys import with_keys_moved
from kvideo.train.restore import run_config


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"video": {"fsp": 2}}, "video.fsp is not a kvideo setting; did you mean video.fps?"),
        (
            {"trainer": {"max_step": 10}},
            "trainer.max_step is not a kvideo setting; did you mean trainer.max_steps?",
        ),
        (
            {"model": {"lora_rnak": 8}},
            "model.lora_rnak is not a kvideo setting; did you mean model.lora_rank?",
        ),
        (
            {"video": {"zzzz": 1}},
            "video.zzzz is not a kvideo setting (see python train.py --cfg job for video)",
        ),
    ],
)
def test_a_key_the_schema_lacks_is_refused_naming_the_closest(raw: dict, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        config_from(raw)
    assert str(refused.value) == message


def test_extras_beside_the_schema_and_free_form_values_are_not_keys() -> None:
    """``hydra`` (and eval.py's ``ckpt_path``) sit beside the schema's nodes; a mixture's
    sources and a freeze stage are values, not keys."""
    cfg = config_from({"hydra": {"run": {"dir": "x"}}, "ckpt_path": "r", "video": {"fps": 2.0}})
    assert cfg.video.fps == 2.0


def test_a_saved_config_from_another_version_drops_its_extra_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved = OmegaConf.to_container(OmegaConf.structured(KVideoConfig))
    assert isinstance(saved, dict)
    saved["video"]["retired_option"] = 3
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    with caplog.at_level(logging.WARNING):
        cfg = run_config(tmp_path)
    assert isinstance(cfg, KVideoConfig)
    assert "['video.retired_option'] are not settings of this kvideo version; ignored" in caplog.text


def test_a_run_saved_before_a_key_moved_reads_it_at_its_new_place() -> None:
    """``data.val_max_samples`` moved to ``video.val_max_samples``: an old run dir's value is kept."""
    saved = {"data": {"val_max_samples": 7, "packing": False}, "video": {"fps": 2.0}}
    moved = with_keys_moved(saved)
    assert moved == {"data": {"packing": False}, "video": {"fps": 2.0, "val_max_samples": 7}}
    assert config_from(moved).video.val_max_samples == 7
    with pytest.raises(ValueError, match=r"^data\.val_max_samples is now video\.val_max_samples$"):
        config_from({"data": {"val_max_samples": 7}})
