"""No crash costs a checkpoint that could have been written: the final checkpoint comes before
the final validation, an unexpected error checkpoints the last step boundary (one process) and
says why in ``failed.json`` and ``train.log``, and with several ranks every rank ends.

Also the bug that made this class visible: generation from a tokenizer with no chat template,
no BOS and no pad token, after an empty prompt, in every model family."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.model import spec
from kvideo.train import validator
from kvideo.train.metrics import read_jsonl
from kvideo.train.optim import ScheduledOptimizer
from kvideo.train.run import train
from tests.helpers.cli import run_eval, run_module, run_python
from tests.helpers.configs import tiny_cli_run, tiny_config, tiny_hf_config
from tests.helpers.hf_models import save_tiny_lm, save_tokenizer
from tests.helpers.paths import REPO
from tests.helpers.preemption import InjectedCrash, crashing_build_model
from tests.helpers.ranks import start_ranks

pytestmark = pytest.mark.slow


def _last_checkpoint_step(run_dir: Path) -> int:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return int(state["step"])


def _failed(run_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((run_dir / "failed.json").read_text())
    return record


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r}


def _raise_in_validation(*args: Any, **kwargs: Any) -> Any:
    raise InjectedCrash("injected in validation")


@pytest.mark.parametrize("family", ["builtin", "hf"])
def test_every_family_trains_validates_captions_and_evaluates_with_a_bare_tokenizer(
    family: str, tiny_hf_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    """An LM tokenizer with an EOS alone (no chat template, BOS or pad token) and the default
    empty prompt: the context before the caption is empty, which is a valid context."""
    data = tmp_path / "data"
    if family == "builtin":
        save_tokenizer(tmp_path / "bare", bare=True)
        cfg = tiny_config(data, max_steps=2, val_every=0)
        cfg.data.tokenizer = str(tmp_path / "bare")
    else:
        lm = save_tiny_lm(tmp_path / "bare_lm", bare_tokenizer=True)
        cfg = tiny_hf_config(data, tiny_hf_parts[0], lm, max_steps=2, val_every=0)
        cfg.video.prompt = ""
    run_dir = tmp_path / "run"
    final = train(cfg, run_dir)
    assert final["status"] == "completed" and "val_loss" in final
    predictions = read_jsonl(run_dir / "predictions_val.jsonl")
    assert predictions and all(isinstance(p["generated"], str) for p in predictions)

    video = predictions[0]["video"]
    caption = run_module("kvideo.caption", str(run_dir), video, "--max-new-tokens", "4", cwd=tmp_path)
    assert caption.returncode == 0, caption.stderr[-2000:]
    assert isinstance(json.loads(caption.stdout.splitlines()[0])["caption"], str)

    evaluated = run_eval(
        f"ckpt_path={run_dir}", "max_new_tokens=4", f"hydra.run.dir={tmp_path}/eval", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "gen_acc_color" in json.loads((tmp_path / "eval" / "eval.json").read_text())


def test_a_crash_in_the_final_validation_keeps_the_last_step_and_the_resume_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tmp_path / "data", max_steps=4, ckpt_every=0, val_every=0)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(validator.Validator, "validate", _raise_in_validation)
        with pytest.raises(InjectedCrash):
            train(cfg, run_dir)
    assert _last_checkpoint_step(run_dir) == 4  # no periodic checkpoint: all 4 steps kept
    failed = _failed(run_dir)
    assert failed["step"] == 4 and failed["error"] == "InjectedCrash: injected in validation"
    assert failed["checkpoint"]["step"] == 4 and "InjectedCrash" in failed["traceback"]

    final = train(cfg, run_dir)
    assert final["status"] == "completed" and final["resumed_from"] == 4 and "val_loss" in final
    assert not (run_dir / "failed.json").exists()  # the earlier attempt's, gone with its cause


def test_a_crash_mid_step_checkpoints_the_step_boundary_and_the_resume_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grad_accum 2: forward 7 is the first micro-batch of step 4; steps 1-3 are whole and must
    be kept (no periodic checkpoint), with the data position and RNG states of step 3's end."""
    cfg = tiny_config(tmp_path / "data", max_steps=6, ckpt_every=0, val_every=0)
    reference = train(cfg, tmp_path / "reference")
    run_dir = tmp_path / "crashed"
    build = spec.build_model
    monkeypatch.setattr(spec, "build_model", crashing_build_model(7))
    with pytest.raises(InjectedCrash):
        train(cfg, run_dir)
    assert _last_checkpoint_step(run_dir) == 3
    assert _failed(run_dir)["checkpoint"] == {"step": 3, "written_after_failure": True}

    monkeypatch.setattr(spec, "build_model", build)
    final = train(cfg, run_dir)
    assert final["resumed_from"] == 3 and final["status"] == "completed"
    expected, got = _train_losses(tmp_path / "reference"), _train_losses(run_dir)
    assert sorted(got) == list(range(1, 7))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    assert final["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-6)


def test_a_crash_inside_the_weight_update_writes_no_checkpoint_of_half_updated_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tmp_path / "data", max_steps=6, ckpt_every=2, val_every=0)
    apply, calls = ScheduledOptimizer.apply_gradients, [0]

    def apply_then_crash(self: ScheduledOptimizer, grad_norm: torch.Tensor) -> float:
        calls[0] += 1
        if calls[0] == 3:
            raise InjectedCrash("injected in the optimizer step")
        return apply(self, grad_norm)

    monkeypatch.setattr(ScheduledOptimizer, "apply_gradients", apply_then_crash)
    with pytest.raises(InjectedCrash):
        train(cfg, tmp_path / "run")
    assert _last_checkpoint_step(tmp_path / "run") == 2
    checkpoint = _failed(tmp_path / "run")["checkpoint"]
    assert checkpoint["step"] == 2 and not checkpoint["written_after_failure"]
    assert "weight update" in checkpoint["why_not"]


def test_the_cli_puts_the_error_that_ends_a_run_in_train_log_and_one_line_on_the_console(
    tmp_path: Path,
) -> None:
    """The real ``train.py``, with a validation that raises (installed before Hydra starts)."""
    run_dir = tmp_path / "run"
    script = (
        "import runpy, sys\n"
        "from kvideo.train import validator\n"
        "def boom(*a, **k):\n"
        "    raise RuntimeError('validation exploded')\n"
        "validator.Validator.validate = boom\n"
        f"sys.argv = ['train.py', *{_cli_args(tmp_path, run_dir)!r}]\n"
        f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')\n"
    )
    result = run_python("-c", script, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("kvideo: validation exploded")
    assert "Traceback" not in result.stderr
    log = (run_dir / "train.log").read_text()
    assert "failed at step 3: RuntimeError: validation exploded" in log
    assert _last_checkpoint_step(run_dir) == 3


def _cli_args(data: Path, run_dir: Path) -> list[str]:
    return [
        *tiny_cli_run(data / "data", run_dir, train_clips=8),
        "trainer.max_steps=3",
        "trainer.val_every=0",
        "trainer.ckpt_every=0",
    ]


def _rank_crashing_in_validation(rank: int, cfg: Any, run_dir: Path) -> None:
    if rank == 1:
        validator.Validator.validate = _raise_in_validation  # type: ignore[method-assign]
    train(cfg, run_dir)


def test_when_one_of_two_ranks_crashes_both_end_and_the_periodic_checkpoint_resumes(tmp_path: Path) -> None:
    """Rank 1 fails in the validation at step 4, rank 0 waits for it in that validation's
    collective. A checkpoint needs both, so the last periodic one (step 2) is kept; both ranks
    end, well before any collective timeout, and ``failed.json`` names rank 1 and its error."""
    cfg = tiny_config(tmp_path / "data", max_steps=6, ckpt_every=2, val_every=4, log_every=2)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    processes = start_ranks(_rank_crashing_in_validation, 2, cfg, run_dir)
    for process in processes:
        process.join(timeout=max(1.0, 150 - (time.monotonic() - started)))
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive, "a rank was still running 150 s after the other failed"
    assert all(p.exitcode != 0 for p in processes)
    failed = _failed(run_dir)
    assert failed["rank"] == 1 and failed["step"] == 4
    assert failed["error"] == "InjectedCrash: injected in validation"
    assert failed["checkpoint"]["step"] == 2 and not failed["checkpoint"]["written_after_failure"]
    assert _last_checkpoint_step(run_dir) == 2

    final = train(cfg, run_dir)  # one process resumes what two wrote
    assert final["status"] == "completed" and final["resumed_from"] == 2
