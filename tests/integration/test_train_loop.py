"""The training loop end to end (real sample corpus, real loader, real model), and exact resume
after SIGKILL and SIGTERM. The pieces around it have their unit tests (``tests/unit/``)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from kvideo.data.settings import ClipSettings
from kvideo.train import signals
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.configs import MAX_STEPS, tiny_config
from tests.helpers.paths import REPO
from tests.helpers.preemption import preempting_build_model

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sample corpus with two broken training files (so skip accounting is exercised)."""
    from kvideo.data.loader import build_dataset
    from kvideo.data.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("corpus")
    cfg = tiny_config(root)
    rows = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data)).rows
    Path(rows[5].path).write_bytes(b"")  # -> "empty"
    Path(rows[11].path).write_bytes(b"this is not a video container\n" * 8)  # -> "unreadable"
    return {"root": root, "bad": {rows[5].path, rows[11].path}}


@pytest.fixture(scope="module")
def reference(corpus: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("reference")
    final = train(tiny_config(corpus["root"]), run_dir)
    return {"run_dir": run_dir, "final": final}


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r}


def test_uninterrupted_run_writes_everything(reference: dict[str, Any], corpus: dict[str, Any]) -> None:
    run_dir, final = reference["run_dir"], reference["final"]
    assert final["status"] == "completed" and final["step"] == MAX_STEPS
    assert json.loads((run_dir / "final.json").read_text()) == json.loads(json.dumps(final))
    records = read_jsonl(run_dir / "metrics.jsonl")
    train_lines = [r for r in records if "split" not in r]
    assert [r["step"] for r in train_lines] == list(range(1, MAX_STEPS + 1))
    assert [r["epoch"] for r in train_lines] == [0] * 6 + [1] * 6
    for r in train_lines:
        assert math.isfinite(r["loss"]) and r["lr"] > 0
        assert r["tokens_per_s"] > 0 and r["clips_per_s"] > 0
        assert 0.0 <= r["data_wait_share"] <= 1.0
    # Both bad files are met once per epoch: counts are cumulative occurrences...
    assert train_lines[-1]["skipped"] == {"empty": 2, "unreadable": 2}
    assert final["skipped"] == {"empty": 2, "unreadable": 2}
    # ...while skipped.jsonl lists each file once.
    skipped = read_jsonl(run_dir / "skipped.jsonl")
    assert sorted(r["path"] for r in skipped) == sorted(corpus["bad"])
    assert {r["reason"] for r in skipped} == {"empty", "unreadable"}

    val_lines = [r for r in records if r.get("split") == "validation"]
    assert [r["step"] for r in val_lines] == [6, MAX_STEPS]
    for key in ("val_loss", "acc_color", "acc_shape", "acc_direction"):
        assert key in final and key in val_lines[-1]
    assert final["chance_shape"] == pytest.approx(1 / 3)
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert OmegaConf.load(run_dir / "config.yaml").trainer.max_steps == MAX_STEPS
    assert (run_dir / "checkpoints" / "last.pt").exists()
    # Training did something: the loss went down.
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from omegaconf import OmegaConf
    import kvideo.model.spec as spec
    from kvideo.config import config_from
    from kvideo.train import train

    cfg_path, run_dir, sig, at_forward = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    build = spec.build_model
    calls = [0]

    def hook(module, args):
        if module.training:
            calls[0] += 1
            if calls[0] == at_forward:
                os.kill(os.getpid(), sig)  # arrives in the middle of a step

    def build_model(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    spec.build_model = build_model
    result = train(config_from(OmegaConf.load(cfg_path)), run_dir)
    print("STATUS", result["status"], flush=True)
    sys.exit(result.get("exit_code", 0))
    """
)


def _run_child(cfg_path: Path, run_dir: Path, sig: int, at_forward: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(cfg_path), str(run_dir), str(sig), str(at_forward)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_resume_after_sigkill_and_sigterm_is_exact(
    reference: dict[str, Any], corpus: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config(corpus["root"])
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    run_dir = tmp_path / "run"

    # 1. SIGKILL during step 5 (its 9th forward at grad_accum=2): no chance to clean up.
    killed = _run_child(cfg_path, run_dir, signal.SIGKILL, at_forward=9)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert max(_train_losses(run_dir)) == 4  # steps 1-4 logged, checkpoint at 3

    # 2. Restart: resumes from step 3; SIGTERM during step 8 (its 9th forward) ->
    #    checkpoint at the end of step 8 and a clean exit with the preemption status.
    preempted = _run_child(cfg_path, run_dir, signal.SIGTERM, at_forward=9)
    assert "resuming from step 3" in preempted.stderr
    assert preempted.returncode == signals.EXIT_PREEMPTED, preempted.stderr[-3000:]
    assert "STATUS preempted" in preempted.stdout
    assert "checkpointed step 8" in preempted.stderr
    assert not (run_dir / "final.json").exists()

    # 3. Restart in this process and finish.
    with caplog.at_level(logging.INFO, logger="kvideo"):
        final = train(cfg, run_dir)
    assert "resuming from step 8" in caplog.text
    assert final["status"] == "completed" and final["resumed_from"] == 8

    # Same batches, same dropout masks, same updates: the losses match the uninterrupted run.
    expected, got = _train_losses(reference["run_dir"]), _train_losses(run_dir)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))  # re-done steps were not logged twice
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    assert final["val_loss"] == pytest.approx(reference["final"]["val_loss"], abs=1e-5)
    for attr in ("color", "shape", "direction"):
        assert final[f"acc_{attr}"] == reference["final"][f"acc_{attr}"]
    # Skip accounting survives the restarts: cumulative counts, each file listed once.
    assert final["skipped"] == reference["final"]["skipped"]
    assert len(read_jsonl(run_dir / "skipped.jsonl")) == 2
    # A requeue after completion does not train again.
    assert train(cfg, run_dir)["step"] == MAX_STEPS


def test_the_gpu_paths_prefetch_thread_trains_and_resumes_exactly(
    reference: dict[str, Any], corpus: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPU decoding loads on a prefetch thread in the training process; the same machinery with
    the CPU decoder, preempted mid-run and resumed, computes the uninterrupted run's steps."""
    import kvideo.data.loader as loader
    import kvideo.model.spec as spec

    monkeypatch.setattr(loader, "prefetches_in_process", lambda cfg: True)
    prefetchers: list[Any] = []
    prefetcher = loader._ThreadPrefetcher

    def counted_prefetcher(*args: Any, **kwargs: Any) -> Any:
        prefetchers.append(prefetcher(*args, **kwargs))
        return prefetchers[-1]

    monkeypatch.setattr(loader, "_ThreadPrefetcher", counted_prefetcher)
    # during step 5 (grad_accum=2)
    monkeypatch.setattr(spec, "build_model", preempting_build_model(9))
    cfg, run_dir = tiny_config(corpus["root"]), tmp_path / "run"
    assert train(cfg, run_dir)["status"] == "preempted"
    assert max(_train_losses(run_dir)) == 5
    final = train(cfg, run_dir)
    assert final["status"] == "completed" and final["resumed_from"] == 5
    assert len(prefetchers) >= 4  # each run's epochs and validations went through the thread

    expected, got = _train_losses(reference["run_dir"]), _train_losses(run_dir)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    assert final["val_loss"] == pytest.approx(reference["final"]["val_loss"], abs=1e-5)


# ----------------------------------------------------------------------------- pieces


def test_worker_processes_and_early_epoch_opening_leave_the_run_unchanged(
    corpus: dict[str, Any], tmp_path: Path
) -> None:
    """With workers the next epoch's loader is opened before the current one ends; with
    random_segment the frames depend on the epoch, so a mix-up would change the losses."""
    losses = {}
    for workers in (0, 2):
        cfg = tiny_config(corpus["root"], num_workers=workers, val_every=0)
        cfg.video.sampling_policy = "random_segment"
        train(cfg, tmp_path / f"w{workers}")
        losses[workers] = _train_losses(tmp_path / f"w{workers}")
    assert list(losses[0]) == list(range(1, MAX_STEPS + 1))
    for step, loss in losses[0].items():
        assert losses[2][step] == pytest.approx(loss, abs=1e-5), step
