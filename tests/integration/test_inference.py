"""A trained run, used from outside the trainer: ``python -m kvideo.caption``, ``eval.py`` and the
Hugging Face export, on a builtin and an ``hf_vlm`` run trained here for a few steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_model

from kvideo.data.loader import build_dataset
from kvideo.data.settings import ClipSettings
from kvideo.inference import load_trained
from kvideo.model import build_model
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.cli import run_eval, run_module
from tests.helpers.configs import tiny_config, tiny_hf_config

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_hf_parts: tuple[Path, Path]) -> dict[str, Any]:
    """A builtin run and two hf_vlm runs (full LM; LoRA), each trained 4 steps."""
    root = tmp_path_factory.mktemp("inference")
    data = root / "data"
    out: dict[str, Any] = {"data": data, "root": root}
    configs = {
        "builtin": tiny_config(data, max_steps=4, val_every=0),
        "hf": tiny_hf_config(data, *tiny_hf_parts, max_steps=4, val_every=0),
        "lora": tiny_hf_config(data, *tiny_hf_parts, model={"lora_rank": 4}, max_steps=4, val_every=0),
    }
    for name, cfg in configs.items():
        out[name] = {"final": train(cfg, root / name), "dir": root / name, "cfg": cfg}
    return out


def _val_videos(run: dict[str, Any], count: int) -> list[str]:
    trained = load_trained(run["dir"], device="cpu")
    rows = build_dataset(ClipSettings.of(trained.cfg), split="validation", tokenizer=trained.tokenizer).rows
    return [r.path for r in rows[:count]]


@pytest.mark.parametrize("name", ["builtin", "hf"])
def test_caption_prints_one_json_line_per_video_and_counts_a_bad_one(
    name: str, runs: dict[str, Any], tmp_path: Path
) -> None:
    run = runs[name]
    videos = _val_videos(run, 2)
    result = run_module(
        "kvideo.caption",
        str(run["dir"]),
        *videos,
        str(tmp_path / "missing.mp4"),
        "--max-new-tokens",
        "6",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]  # the missing video, after the others
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["video"] for line in lines] == [*videos, str(tmp_path / "missing.mp4")]
    assert lines[2] == {"video": str(tmp_path / "missing.mp4"), "error": "missing"}
    # The run's own sampling: the validation loader's frames and times for the same clips.
    trained = load_trained(run["dir"], device="cpu")
    dataset = build_dataset(ClipSettings.of(trained.cfg), split="validation", tokenizer=trained.tokenizer)
    for line, index in zip(lines[:2], range(2), strict=True):
        sample = dataset[index]
        assert line["frames"] == int(sample["frame_mask"].sum())
        expected = [round(float(t), 3) for t in sample["frame_times"][sample["frame_mask"]]]
        assert line["times"] == expected
        assert isinstance(line["caption"], str)


def test_caption_of_a_bad_run_dir_is_one_line(tmp_path: Path) -> None:
    result = run_module("kvideo.caption", str(tmp_path), "a.mp4", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"kvideo.caption: {tmp_path} is not a kvideo run dir: it has no config.yaml"
    )


def test_caption_of_a_builtin_run_is_what_the_model_generates(runs: dict[str, Any]) -> None:
    """The greedy caption equals argmax decoding by hand (the builtin generate has no cache)."""
    from kvideo.data.loader import collate, to_device
    from kvideo.inference import caption_batch

    trained = load_trained(runs["builtin"]["dir"], device="cpu")
    dataset = build_dataset(ClipSettings.of(trained.cfg), split="validation", tokenizer=trained.tokenizer)
    batch = to_device(collate([dataset[0]]), trained.device)
    caption = caption_batch(trained.model, batch, trained.tokenizer, prompt="", max_new_tokens=5)[0]
    ids = torch.tensor([trained.tokenizer.context_ids("")])
    for _ in range(5):
        logits = trained.model(batch["frames"], batch["frame_mask"], ids)["logits"]
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    generated = ids[0, 1:].tolist()
    eos = trained.tokenizer.eos_id
    assert caption == trained.tokenizer.decode(
        generated[: generated.index(eos)] if eos in generated else generated
    )


def test_eval_reproduces_the_runs_validation_and_writes_predictions(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    run = runs["hf"]
    result = run_eval(
        f"ckpt_path={run['dir']}", "max_new_tokens=6", f"hydra.run.dir={tmp_path}/eval", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    # the same checkpoint, split and config as the run's final validation (val_max_batches=1 there)
    assert report["step"] == 4 and report["split"] == "validation"
    for key in ("val_loss", "acc_color", "gen_acc_color", "bleu", "chrf", "exact_match"):
        assert key in report, key
    predictions = read_jsonl(tmp_path / "eval" / "predictions.jsonl")
    assert len(predictions) == report["val_clips"] == 8
    assert {"video", "reference", "generated", "frames", "times"} <= set(predictions[0])


def test_eval_overrides_change_only_the_named_keys_of_the_runs_config(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    run = runs["builtin"]
    result = run_eval(
        f"ckpt_path={run['dir']}",
        "video.max_frames=2",
        "video/sampling=qwen",
        "max_new_tokens=4",
        f"hydra.run.dir={tmp_path}/eval",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["overrides"] == {"video.max_frames": 2, "video.sampling_policy": "qwen"}
    assert all(p["frames"] <= 2 for p in read_jsonl(tmp_path / "eval" / "predictions.jsonl"))
    # more frames than the run trained with: one line, not a size-mismatch traceback
    bad = run_eval(
        f"ckpt_path={run['dir']}", "video.max_frames=5", f"hydra.run.dir={tmp_path}/bad", cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "video.max_frames=5 > the 4 frames this run trained with" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_new_tokens=-1", "max_new_tokens must be positive (got -1)"),
        ("batch_size=-2", "batch_size must be non-negative (got -2)"),
        ("split=test", "split must be one of ['train', 'validation'] (got 'test')"),
    ],
)
def test_eval_refuses_its_own_bad_keys_before_any_work(override: str, message: str, tmp_path: Path) -> None:
    """It used to accept max_new_tokens=-1 and write all-zero metrics as results."""
    result = run_eval(f"ckpt_path={tmp_path}/any", override, f"hydra.run.dir={tmp_path}/eval", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"kvideo eval: invalid config: {message}"
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_caption_refuses_a_prompt_that_leaves_no_room(runs: dict[str, Any], tmp_path: Path) -> None:
    """It used to print ``"caption": ""`` and exit 0, as train.py refuses such a video.prompt."""
    prompt = " ".join(["describe"] * 200)
    result = run_module("kvideo.caption", str(runs["hf"]["dir"]), "a.mp4", "--prompt", prompt, cwd=tmp_path)
    assert result.returncode == 2 and not result.stdout and "Traceback" not in result.stderr
    # (the tiny two-tower SigLIP's own config warnings come before it)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kvideo.caption: --prompt leaves no room for the caption: its context")


def test_eval_without_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = run_eval(f"hydra.run.dir={tmp_path}/eval", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kvideo eval: ckpt_path is required: python eval.py ckpt_path=RUN_DIR_OR_CHECKPOINT"
    )


def test_training_shows_generated_captions_at_validation(runs: dict[str, Any]) -> None:
    for name in ("builtin", "hf"):
        rows = read_jsonl(runs[name]["dir"] / "predictions_val.jsonl")
        assert len(rows) == 4 and {r["step"] for r in rows} == {4}, name  # the final validation
        assert all(set(r) == {"step", "video", "reference", "generated"} for r in rows)
        assert all(isinstance(r["generated"], str) and r["reference"] for r in rows)


def test_eval_sweeps_over_checkpoints(runs: dict[str, Any], tmp_path: Path) -> None:
    checkpoints = ",".join(str(runs[name]["dir"]) for name in ("builtin", "lora"))
    result = run_eval(
        "-m",
        f"ckpt_path={checkpoints}",
        "max_new_tokens=4",
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((tmp_path / "sweep" / job / "eval.json").read_text())["step"] == 4


def test_export_loads_outside_kvideo(runs: dict[str, Any], tiny_hf_parts: tuple[Path, Path]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = torch.tensor([[1, 5, 9, 30, 2]])
    for name in ("hf", "lora"):
        run = runs[name]
        export = run["dir"] / "export"  # written when the run completed
        info = json.loads((export / "export.json").read_text())
        assert info["step"] == 4 and info["vision"] == str(tiny_hf_parts[0])  # the tower stayed frozen
        trained = load_trained(run["dir"], device="cpu")
        model: Any = trained.model
        expected = model.lm(input_ids=ids).logits
        lm: Any
        if name == "hf":
            lm = AutoModelForCausalLM.from_pretrained(export / "lm", local_files_only=True)
            assert AutoTokenizer.from_pretrained(export / "lm").chat_template
        else:
            base = AutoModelForCausalLM.from_pretrained(tiny_hf_parts[1], local_files_only=True)
            lm = PeftModel.from_pretrained(base, export / "lm_adapter")
        assert torch.allclose(lm(input_ids=ids).logits, expected, atol=1e-5), name
        from safetensors.torch import load_file

        projector = load_file(export / "projector.safetensors")
        for key, value in model.projector.state_dict().items():
            assert torch.equal(projector[key], value), key
        spec = json.loads((export / "projector.json").read_text())
        assert spec["tokens_per_frame"] == 4 and spec["kind"] == "mlp2x_gelu"


def test_export_command_writes_a_builtin_run(runs: dict[str, Any], tmp_path: Path) -> None:
    result = run_module(
        "kvideo.export", str(runs["builtin"]["dir"]), "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["family"] == "builtin"
    trained = load_trained(runs["builtin"]["dir"], device="cpu")
    fresh = build_model(trained.cfg.model, vocab_size=259, max_frames=4, frame_size=32)
    load_model(fresh, tmp_path / "out" / "model.safetensors")  # safetensors' own loader (tied head)
    for key, value in trained.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
