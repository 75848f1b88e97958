"""``trainer.strategy=fsdp``: the whole loop on gloo ranks, and the CLI as a user runs it.

* two FSDP ranks train like two DDP ranks (the same losses and validation numbers, the same
  final weights) and write sharded checkpoints; validation runs in lockstep although one rank
  has a batch with nothing to score (a broken validation clip);
* a signal on one rank between log steps stops both at the next log step, and the resumed run
  computes exactly the uninterrupted run's losses;
* a two-rank checkpoint resumes on one process and that one's on two again;
* ``model=hf_vlm`` with LoRA, a frozen tower, a freeze stage and activation checkpointing
  trains sharded and resumes exactly across the stage change;
* ``torchrun --standalone --nproc_per_node 2 train.py trainer.strategy=fsdp ...`` trains,
  writes a DCP checkpoint, and the same command with more steps resumes from it;
* one process with ``trainer.strategy=fsdp`` says in one line what that does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import KVideoConfig
from kvideo.config.model import FreezeStage
from kvideo.data.settings import ClipSettings
from kvideo.train.checkpoint_dcp import METADATA_NAME
from kvideo.train.metrics import read_jsonl
from tests.helpers.cli import run_train
from tests.helpers.configs import TINY_CLI_OVERRIDES, tiny_config, tiny_hf_config
from tests.helpers.paths import REPO
from tests.helpers.ranks import run_ranks

pytestmark = pytest.mark.slow  # trains a model

STEPS = 6
TRAINER = {"max_steps": STEPS, "ckpt_every": 3, "val_every": 3, "val_max_batches": 0, "log_every": 2}
VAL_CLIPS = 7  # odd: rank 1's last validation sample is a padding duplicate
BROKEN_VAL = 5  # rank 1's second validation batch: this clip and the padding, nothing to score


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kvideo.data.loader import build_dataset
    from kvideo.data.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("fsdp_corpus")
    cfg = _config(root)
    rows = build_dataset(
        ClipSettings.of(cfg), split="validation", tokenizer=build_tokenizer(cfg.data)
    ).rows  # generates it
    Path(rows[BROKEN_VAL].path).write_bytes(b"")
    return root


def _config(root: Path, **trainer: Any) -> KVideoConfig:
    cfg = tiny_config(root, **{**TRAINER, **trainer})
    cfg.video.val_max_samples = VAL_CLIPS
    return cfg


def _train_rank(
    rank: int, cfg: KVideoConfig, run_dir: str, out: str, preempt_on: tuple[int, int] | None
) -> None:
    """``train`` on this rank; ``preempt_on=(rank, n)``: that rank is asked to stop at its n-th
    training forward (only there: the other rank must learn it from the agreement)."""
    from kvideo.model import spec
    from kvideo.train import train
    from tests.helpers.preemption import preempting_build_model

    if preempt_on is not None and preempt_on[0] == rank:
        spec.build_model = preempting_build_model(preempt_on[1])
    final = train(cfg, run_dir)
    Path(out, f"rank{rank}.json").write_text(json.dumps(final))


def _train(
    world: int, cfg: KVideoConfig, run_dir: Path, *, preempt_on: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Every rank's final metrics."""
    out = run_dir.parent / f"{run_dir.name}_finals"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run_ranks(_train_rank, world, cfg, str(run_dir), str(out), preempt_on)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r}


def _validation(final: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in final.items() if k.startswith(("val_loss", "val_clips", "acc_"))}


def _fsdp(**trainer: Any) -> dict[str, Any]:
    return {"strategy": "fsdp", **trainer}


@pytest.fixture(scope="module")
def fsdp_reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("fsdp_reference") / "run"
    finals = _train(2, _config(corpus, **_fsdp()), run_dir)
    assert finals[0]["status"] == finals[1]["status"] == "completed"
    assert _validation(finals[0]) == _validation(finals[1])
    return run_dir, finals[0]


def test_two_fsdp_ranks_train_like_two_ddp_ranks_and_write_sharded_checkpoints(
    corpus: Path, fsdp_reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from kvideo.train.restore import load_trained

    fsdp_dir, fsdp = fsdp_reference
    ddp_dir = tmp_path / "ddp"
    ddp = _train(2, _config(corpus), ddp_dir)[0]
    assert _losses(fsdp_dir) == pytest.approx(_losses(ddp_dir), rel=1e-5)
    assert sorted(_losses(fsdp_dir)) == [2, 4, 6]
    assert fsdp["val_clips"] == ddp["val_clips"] == VAL_CLIPS - 1  # the broken clip is skipped
    assert _validation(fsdp) == pytest.approx(_validation(ddp), rel=1e-5)

    checkpoints = fsdp_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000003.dcp", "step_000006.dcp"]
    files = sorted(p.name for p in (checkpoints / "step_000006.dcp").iterdir())
    assert files == [METADATA_NAME, "__0_0.distcp", "__1_0.distcp", "trainer.pt"]
    sharded, whole = load_trained(fsdp_dir).model.state_dict(), load_trained(ddp_dir).model.state_dict()
    for name, value in whole.items():
        torch.testing.assert_close(sharded[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any((fsdp_dir / "export").iterdir())  # exported from the DCP checkpoint


def test_a_signal_on_one_rank_between_log_steps_stops_both_at_the_next_and_resumes_exactly(
    corpus: Path, fsdp_reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    reference_dir, reference = fsdp_reference
    run_dir = tmp_path / "run"
    # grad_accum 2: rank 1's 5th training forward is step 3's first; log_every 2: stop after 4.
    stopped = _train(2, _config(corpus, **_fsdp()), run_dir, preempt_on=(1, 5))
    assert [f["status"] for f in stopped] == ["preempted", "preempted"]
    assert stopped[0]["step"] == 4
    assert (run_dir / "checkpoints" / "step_000004.dcp" / METADATA_NAME).is_file()

    resumed = _train(2, _config(corpus, **_fsdp()), run_dir)[0]
    assert resumed["status"] == "completed" and resumed["resumed_from"] == 4
    assert _losses(run_dir) == _losses(reference_dir)
    assert _validation(resumed) == _validation(reference)


def test_a_two_rank_checkpoint_resumes_on_one_process_and_that_ones_on_two(
    corpus: Path, fsdp_reference: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    reference_dir, _ = fsdp_reference
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(
        reference_dir / "checkpoints" / "step_000003.dcp", run_dir / "checkpoints" / "step_000003.dcp"
    )
    one = _train(1, _config(corpus, **_fsdp(val_every=0, export_at_end=False)), run_dir)[0]
    assert (one["status"], one["resumed_from"], one["world_size"]) == ("completed", 3, 1)
    two = _train(2, _config(corpus, **_fsdp(max_steps=STEPS + 1, val_every=0, export_at_end=False)), run_dir)
    assert (two[0]["status"], two[0]["resumed_from"], two[0]["world_size"]) == ("completed", STEPS, 2)
    assert sorted(_losses(run_dir)) == [4, 6, 7]  # the run dir began with the checkpoint alone


def test_hf_vlm_with_lora_a_frozen_tower_and_a_freeze_stage_trains_sharded_and_resumes_exactly(
    corpus: Path, tiny_hf_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    model = {
        "lora_rank": 4,
        "freeze": ["vision", "lm"],
        "freeze_schedule": [FreezeStage(start_step=2, unfreeze=["lm"])],  # the adapters, from step 2
        "activation_checkpointing": True,
    }
    cfg = tiny_hf_config(
        corpus, *tiny_hf_parts, model=model, max_steps=4, ckpt_every=0, val_every=0, strategy="fsdp"
    )
    cfg.trainer.export_at_end = False
    reference = _train(2, cfg, tmp_path / "reference")[0]
    assert reference["status"] == "completed"

    run_dir = tmp_path / "run"
    stopped = _train(2, cfg, run_dir, preempt_on=(0, 3))  # during step 2, before the stage change
    assert [f["status"] for f in stopped] == ["preempted", "preempted"] and stopped[0]["step"] == 2
    resumed = _train(2, cfg, run_dir)[0]
    assert resumed["status"] == "completed" and resumed["resumed_from"] == 2
    assert _losses(run_dir) == _losses(tmp_path / "reference")
    assert resumed["val_loss"] == reference["val_loss"]

    index = FileSystemReader(run_dir / "checkpoints" / "step_000004.dcp").read_metadata().state_dict_metadata
    weights = [k.removeprefix("model.") for k in index if k.startswith("model.")]
    assert weights and all(k.startswith("projector.") or ".lora_" in k for k in weights)
    assert any(".lora_" in k for k in weights)  # trained from step 2


def _cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(REPO / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=_cli_env(),
    )


def test_torchrun_fsdp_trains_writes_a_dcp_checkpoint_and_a_longer_run_resumes_from_it(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    common = [
        "trainer.strategy=fsdp",
        *TINY_CLI_OVERRIDES,
        "data.sample_train_clips=16",
        "data.sample_val_clips=4",
        "trainer.ckpt_every=2",
        "trainer.val_every=0",
        "trainer.log_every=1",
        "trainer.export_at_end=false",
        f"hydra.run.dir={run_dir}",
    ]
    first = _torchrun(*common, "trainer.max_steps=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = run_dir / "checkpoints" / "step_000002.dcp"
    assert (folder / METADATA_NAME).is_file()
    assert json.loads((run_dir / "final.json").read_text())["world_size"] == 2

    second = _torchrun(*common, "trainer.max_steps=4", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from step 2 ({folder}" in second.stdout + second.stderr
    final = json.loads((run_dir / "final.json").read_text())
    assert (final["status"], final["step"], final["resumed_from"]) == ("completed", 4, 2)
    assert (run_dir / "checkpoints" / "step_000004.dcp" / METADATA_NAME).is_file()


def test_one_process_fsdp_says_in_one_line_that_it_splits_nothing_and_trains(tmp_path: Path) -> None:
    result = run_train(
        "trainer.strategy=fsdp",
        *TINY_CLI_OVERRIDES,
        "data.sample_train_clips=8",
        "data.sample_val_clips=4",
        "trainer.max_steps=2",
        "trainer.ckpt_every=2",
        "trainer.val_every=0",
        "trainer.export_at_end=false",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        env=_cli_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = [line for line in (result.stdout + result.stderr).splitlines() if "FSDP2" in line]
    assert len(said) == 1
    assert said[0].endswith(
        "FSDP2 on one process: nothing is split; its 100,800 parameters are wrapped anyway, in 4 "
        "transformer blocks + the root, so that its checkpoints are DCP ones that resume on "
        "any number of ranks"
    )
    assert (tmp_path / "run" / "checkpoints" / "step_000002.dcp" / METADATA_NAME).is_file()
