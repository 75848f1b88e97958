"""The ``train.py`` command line refuses bad configs before doing any work."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import cli


def run_train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli.run_train(*args, cwd=cwd, timeout=120)


def test_bad_value_exits_before_work_with_the_seed_message(tmp_path: Path) -> None:
    result = run_train("video.fps=0", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert "video.fps must be positive (got 0.0)" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_multirun_with_one_bad_point_launches_nothing(tmp_path: Path) -> None:
    result = run_train("-m", "video.max_frames=4,0", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode != 0
    assert "refusing to launch: 1 of 2 sweep points are invalid" in result.stderr
    assert "[video.max_frames=0] video.max_frames must be >= 1 (got 0)" in result.stderr
    assert "Launching" not in result.stdout + result.stderr
    assert not (tmp_path / "sweep" / "0").exists()


def test_unknown_key_is_refused_in_one_line_without_hydras_append_advice(tmp_path: Path) -> None:
    """Hydra's own error told the user to append it with ``+video.bogus=1``, which the schema
    then dropped without a word (``test_config_errors_cli`` has the typo cases)."""
    result = run_train("video.bogus=1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kvideo: invalid config: video.bogus is not a kvideo setting "
        "(see python train.py --cfg job for video)"
    )


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    result = run_train("--cfg", "job", "video.fps=2.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fps: 2.5" in result.stdout
    assert "sampling_policy: uniform" in result.stdout
    assert "tokens_per_frame: 16" in result.stdout


def test_cfg_job_refuses_what_the_run_would_refuse_before_printing(tmp_path: Path) -> None:
    """``--cfg job`` runs the schema's rules and the pre-flight step (here the token budget and
    the memory estimate), as a run would, instead of printing a config that cannot run."""
    result = run_train("--cfg", "job", "video.max_frames=64", cwd=tmp_path)
    assert result.returncode == 2
    assert "kvideo: invalid config: token budget exceeded" in result.stderr
    assert result.stdout == ""
    result = run_train("--cfg", "job", "video.frame_size=4096", "trainer.batch_size=4096", cwd=tmp_path)
    assert result.returncode == 2
    assert "kvideo: invalid config: host memory: this run needs at least" in result.stderr


def test_help_lists_every_key_with_its_description(tmp_path: Path) -> None:
    result = run_train("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  video.fps: Target sampling rate in frames per second (Molmo2 uses 2)" in result.stdout
    assert "  model.lora_rank: 0 = off; else LoRA (`peft`) of that rank" in result.stdout
    assert "video/sampling: molmo2, molmo2_no_max_fps, qwen, random_segment, uniform" in result.stdout


def test_token_budget_from_the_cli(tmp_path: Path) -> None:
    result = run_train("video.max_frames=64", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert "64 * 16 + 48 = 1072 > model.max_seq_len (384)" in result.stderr
