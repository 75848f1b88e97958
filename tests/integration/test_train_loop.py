"""The training loop end to end (real sample corpus, real loader, real model), exact resume
after SIGKILL and SIGTERM, plus the pieces around it: schedule, optimizer groups, metrics
files, evaluation accuracy and signal handlers."""

from __future__ import annotations

import itertools
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
import torch
from omegaconf import OmegaConf
from torch import nn

from kvideo.data.datasets.sample.evaluation import candidate_set
from kvideo.train import signals
from kvideo.train.distributed import DistEnv
from kvideo.train.evaluate import evaluate
from kvideo.train.loop import param_groups, train
from kvideo.train.metrics import RunWriter, read_jsonl
from kvideo.train.schedule import build_scheduler, lr_factor
from tests.helpers.configs import MAX_STEPS, tiny_config
from tests.helpers.paths import REPO
from tests.helpers.preemption import preempting_build_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sample corpus with two broken training files (so skip accounting is exercised)."""
    from kvideo.data.loader import build_dataset
    from kvideo.data.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("corpus")
    cfg = tiny_config(root)
    rows = build_dataset(cfg, split="train", tokenizer=build_tokenizer(cfg.data)).rows
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
    from kvideo.config import to_validated
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
    result = train(to_validated(OmegaConf.load(cfg_path)), run_dir)
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


def test_lr_schedule_warmup_then_cosine_to_floor() -> None:
    f = [lr_factor(s, warmup_steps=4, max_steps=20, min_lr_ratio=0.1) for s in range(25)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[4:]))
    assert f[19] == pytest.approx(0.1) and f[24] == pytest.approx(0.1)
    assert lr_factor(0, warmup_steps=0, max_steps=10, min_lr_ratio=0.0) == 1.0

    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = build_scheduler(opt, warmup_steps=4, max_steps=20, min_lr_ratio=0.1)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(f[:20])


def test_param_groups_skip_norms_biases_and_embeddings() -> None:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.pos = nn.Parameter(torch.zeros(6, 4))
            self.proj = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight  # tied: must appear once

    toy = Toy()
    decay, no_decay = param_groups(toy, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(toy.proj.weight)}
    expected = {toy.embed.weight, toy.pos, toy.proj.bias, toy.norm.weight, toy.norm.bias}
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in expected}


def test_run_writer_truncates_on_resume_and_keeps_skip_dedupe(tmp_path: Path) -> None:
    w = RunWriter(tmp_path, enabled=True)
    for step in range(1, 8):
        w.log({"step": step, "loss": 1.0 / step, "skipped": {"missing": step}}, tb_prefix="train")
    w.log({"split": "validation", "step": 6, "val_loss": 0.5}, tb_prefix="val")
    assert w.add_skipped([("/a.mp4", "missing"), ("/b.mp4", "empty"), ("/a.mp4", "missing")]) == 2
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # torn by a kill

    w = RunWriter(tmp_path, enabled=True, resume_step=5)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert w.add_skipped([("/a.mp4", "missing"), ("/c.mp4", "unreadable")]) == 1
    w.log({"step": 6, "loss": 0.1}, tb_prefix="train")
    w.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["path"] for r in read_jsonl(tmp_path / "skipped.jsonl")] == ["/a.mp4", "/b.mp4", "/c.mp4"]

    off = RunWriter(tmp_path / "other_rank", enabled=False)
    off.log({"step": 1}, tb_prefix="train")
    off.add_skipped([("/x", "missing")])
    assert not (tmp_path / "other_rank").exists()


class _CaptionReader(nn.Module):
    """Fake model: reads the caption back from the byte ids and scores it against the clip's
    'truth' stored in frames[:, 0, 0, 0, 0] (an index into ``truths``). It sees colour and
    direction, and always believes the shape is a triangle."""

    def __init__(self, truths: list[dict[str, str]]) -> None:
        super().__init__()
        self.truths = truths
        self.rows_per_call: list[int] = []

    def forward(self, frames, frame_mask, input_ids, labels, frame_times=None, visual_at=None):
        from kvideo.data.datasets.sample.captions import parse_caption

        assert frame_times is not None and frame_times.shape == frame_mask.shape  # the batch's own

        self.rows_per_call.append(len(input_ids))
        nll = []
        for i in range(len(input_ids)):
            text = bytes(int(t) for t in input_ids[i] if t < 256).decode()
            said = parse_caption(text)
            truth = dict(self.truths[int(frames[i, 0, 0, 0, 0])], shape="triangle")
            nll.append(float(sum(said[k] != truth[k] for k in truth)))
        nll_t = torch.tensor(nll)
        ntok = (labels != -100).sum(1)
        return {"loss": nll_t.sum() / ntok.sum(), "nll": nll_t, "ntokens": ntok, "logits": None}


def test_evaluate_accuracy_batches_candidates_and_excludes_bad_and_padding() -> None:
    from kvideo.data.datasets.sample.captions import caption_for
    from kvideo.data.tokenizer import ByteTokenizer

    truths = [
        {"color": "red", "shape": "circle", "direction": "left"},
        {"color": "blue", "shape": "triangle", "direction": "up"},
        {"color": "green", "shape": "square", "direction": "down"},
    ]
    tok = ByteTokenizer()

    def batch(idx: list[int], reasons: list[str]) -> dict[str, Any]:
        frames = torch.zeros(len(idx), 1, 3, 2, 2)
        frames[:, 0, 0, 0, 0] = torch.tensor(idx, dtype=torch.float)
        captions = [caption_for(**truths[i]) for i in idx]
        enc = [tok.encode_example("", c, 40) for c in captions]
        return {
            "frames": frames,
            "frame_mask": torch.ones(len(idx), 1, dtype=torch.bool),
            "frame_times": torch.zeros(len(idx), 1),
            "input_ids": torch.tensor([e[0] for e in enc]),
            "labels": torch.tensor([e[1] for e in enc]),
            "skip_reason": reasons,
            "caption": captions,
            "path": [f"/{i}" for i in idx],
        }

    # 3 real samples on one rank, batch of 2, then a padded batch (position 3 >= num_samples)
    # and one bad sample that must count nowhere.
    batches = [batch([0, 1], ["", ""]), batch([2, 0], ["decode_error", ""])]
    model = _CaptionReader(truths)
    env = DistEnv(0, 0, 1, torch.device("cpu"), True)
    result = evaluate(
        model,
        batches,
        tokenizer=tok,
        prompt="",
        max_text_len=40,
        env=env,
        num_samples=3,
        max_rows=7,
        dataset_type="sample",
    )
    # Samples 0 and 1 only (2 is bad; the second "0" is padding).
    assert result["val_clips"] == 2 and result["val_skipped"] == 1
    assert result["acc_color"] == 1.0 and result["acc_direction"] == 1.0
    assert result["acc_shape"] == 0.5  # right only for the clip that really is a triangle
    assert result["chance_color"] == 0.25 and result["chance_shape"] == pytest.approx(1 / 3)
    n_cands = len(candidate_set(caption_for(**truths[0])).captions)
    assert n_cands == 1 + 3 + 2 + 3  # the true caption is shared by the three questions
    # The first batch: one loss forward (2 rows), then its 2 x 9 candidates in chunks of at
    # most max_rows. The second batch has nothing valid, so no forward at all.
    assert model.rows_per_call == [2, 7, 7, 2 * n_cands - 14]
    assert model.training  # restored
    # A dataset without attribute questions (free-form captions) gets the loss alone.
    model.rows_per_call.clear()
    plain = evaluate(
        model,
        batches,
        tokenizer=tok,
        prompt="",
        max_text_len=40,
        env=env,
        num_samples=3,
        max_rows=7,
        dataset_type="manifest",
    )
    assert plain["val_loss"] == result["val_loss"] and plain["val_clips"] == 2
    assert not [k for k in plain if k.startswith(("acc_", "chance_"))]
    assert model.rows_per_call == [2]  # no candidate ranking


def test_signal_handler_sets_flag_and_chains_after_the_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        signals.clear_request()
        restore = signals.install_signal_handlers([signal.SIGUSR1])
        restore_again = signals.install_signal_handlers([signal.SIGUSR1])  # idempotent, no self-chain
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.checkpoint_requested() and signals.request_reason() == "SIGUSR1"
        assert seen == []  # the launcher's handler (submitit: requeue + exit) waits for the checkpoint
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.run_deferred_handlers()
        assert seen == [signal.SIGUSR1]  # ...then runs, once
        assert not signals.run_deferred_handlers()
        restore_again()
        restore()
        signals.clear_request()
        os.kill(os.getpid(), signal.SIGUSR1)  # our handler is gone: the previous one runs directly
        assert not signals.checkpoint_requested() and len(seen) == 2
        signals.request_checkpoint_and_exit("submitit")
        assert signals.request_reason() == "submitit"
    finally:
        signals.clear_request()
        signal.signal(signal.SIGUSR1, previous)


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
