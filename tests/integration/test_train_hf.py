"""``model=hf_vlm`` training: checkpoints hold what trains, resume is exact across a freeze
stage, LoRA checkpoints are adapters, and the real CLI trains the tiny Hugging Face parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config.model import FreezeStage
from kvideo.hf_folders import parameter_count
from kvideo.model import spec
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.cli import run_train
from tests.helpers.configs import tiny_hf_config
from tests.helpers.hf_models import hf_cli_overrides
from tests.helpers.preemption import preempting_build_model

pytestmark = pytest.mark.slow  # trains a model

STEPS = 8
# LLaVA's recipe, compressed: projector alone for 4 steps, then the LM too (the tower stays frozen).
RECIPE = {"freeze": ["vision", "lm"], "freeze_schedule": [FreezeStage(start_step=4, unfreeze=["lm"])]}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf_corpus")


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r}


def _checkpoint(run_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return state


def test_resume_is_exact_across_a_freeze_stage_and_checkpoints_hold_what_trains(
    data_root: Path, tiny_hf_parts: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_hf_config(data_root, *tiny_hf_parts, model=RECIPE, max_steps=STEPS, ckpt_every=0, val_every=0)
    reference = train(cfg, tmp_path / "reference")
    assert reference["status"] == "completed"

    # Preempted during step 3 (before the stage change at step 4), then resumed to the end.
    build = spec.build_model
    # grad_accum 2: forward 5 is the first micro-batch of step 3
    monkeypatch.setattr(spec, "build_model", preempting_build_model(5))
    run_dir = tmp_path / "resumed"
    assert train(cfg, run_dir)["status"] == "preempted"
    assert _checkpoint(run_dir)["step"] == 3
    monkeypatch.setattr(spec, "build_model", build)
    final = train(cfg, run_dir)
    assert final["status"] == "completed" and final["resumed_from"] == 3

    expected, got = _train_losses(tmp_path / "reference"), _train_losses(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    assert final["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-5)

    weights = _checkpoint(run_dir)["model"]
    assert not any(k.startswith("vision.") for k in weights)  # frozen all run: never saved
    assert any(k.startswith("lm.") for k in weights)  # trained from step 4
    assert any(k.startswith("projector.") for k in weights)
    ref_weights = _checkpoint(tmp_path / "reference")["model"]
    for key, value in weights.items():
        assert torch.allclose(value, ref_weights[key], atol=1e-6), key


def test_lora_checkpoints_hold_the_adapters_and_projector_only(
    data_root: Path, tiny_hf_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg = tiny_hf_config(data_root, *tiny_hf_parts, model={"lora_rank": 4}, max_steps=2, val_every=0)
    assert train(cfg, tmp_path / "lora")["status"] == "completed"
    weights = _checkpoint(tmp_path / "lora")["model"]
    assert weights and all(k.startswith("projector.") or ".lora_" in k for k in weights)
    saved = sum(v.numel() for v in weights.values())
    assert saved < parameter_count(tiny_hf_parts[1]) / 3  # not the LM: a tiny LM's adapters are ~10% of it
    trained = {k for k in weights if ".lora_" in k}
    assert any("q_proj" in k for k in trained) and any("down_proj" in k for k in trained)


def test_cli_trains_hf_vlm_from_local_folders(tiny_hf_parts: tuple[Path, Path], tmp_path: Path) -> None:
    result = run_train(
        *hf_cli_overrides(*tiny_hf_parts),
        "trainer=debug",
        "trainer.device=cpu",
        "trainer.num_workers=0",
        "video.max_frames=4",
        f"video.data_root={tmp_path / 'data'}",
        "data.sample_train_clips=16",
        "data.sample_val_clips=4",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    log = result.stdout + result.stderr
    assert "parameters: vision" in log and "(0 trainable) | projector" in log  # the tower is frozen
    assert (tmp_path / "run" / "final.json").exists()
