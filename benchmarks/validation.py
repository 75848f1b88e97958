"""Validation on the default run: decoded once and scored per clip, against today's path.

The default run (``make train``: ``tiny_vlm`` on the embedded sample corpus) validates 160 clips
4 times (every 300 of 1,200 steps, the last one final): the loss, then attribute accuracy from 9
candidate captions a clip, then 4 generated captions. Two arms, on the same trained weights:

* ``today``: the path before issue #25, reachable for this comparison: every validation decodes
  its clips again (``data.val_cache_mb=0``), and every candidate caption runs its own copy of its
  clip's frames through the whole model (the model's ``takes_clip_of_row`` off);
* ``decode_once``: the clips are decoded at the first validation and replayed from memory after
  it (``kvideo.data.decode_once``); each clip's visual tokens come from the loss forward and its
  candidates share the clip's prefix in the LM (``kvideo.model.packing.shared_prefix_layout``).

Each arm runs a run's 4 validations (``Validator.validate`` + ``predictions``, what the trainer
calls) with a fresh validator; arms alternate, ``--rounds`` times each. Timed: wall time and CPU
time (this process plus its DataLoader workers, which end with each validation's loader). The
weights are the default run's after ``--train-steps`` steps (its export), so candidate NLLs are a
trained model's and accuracies are not decided by ties.

Target (issue #25): the 4 validations' wall time <= 0.4x today's, with ``val_loss`` and every
``acc_*`` equal bit for bit. Writes ``benchmarks/results/validation.json``.

``python -m benchmarks.validation [--rounds 2] [--train-steps 150] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.corpus import CORPUS_ROOT

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CACHE = CORPUS_ROOT / "kvideo_cache"
VALIDATIONS = 4  # a default run's: steps 300, 600, 900 and the final one
TARGET_WALL_RATIO = 0.4
ARMS = ("today", "decode_once")


def trained_weights(steps: int, folder: Path) -> Path:
    """The default run's export after ``steps`` steps (no validation on the way)."""
    overrides = [f"trainer.max_steps={steps}", "trainer.val_every=0", f"hydra.run.dir={folder}"]
    env = dict(os.environ, KVIDEO_CACHE=str(SAMPLE_CACHE))
    subprocess.run(
        [sys.executable, "train.py", *overrides], cwd=REPO, env=env, check=True, capture_output=True
    )
    return folder / "export" / "model.safetensors"


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_arm(arm: str, cfg: Any, model: Any, tokenizer: Any, env: Any) -> dict[str, Any]:
    """One run's validations with a fresh validator: per validation wall and CPU seconds, and
    the metrics of each."""
    import dataclasses

    from kvideo.data.settings import ClipSettings
    from kvideo.train.validator import Validator

    cache_mb = 0 if arm == "today" else cfg.data.val_cache_mb
    arm_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_cache_mb=cache_mb))
    model.takes_clip_of_row = arm != "today"
    clips = ClipSettings.of(arm_cfg)
    validator = Validator(
        arm_cfg, env, clips, tokenizer=tokenizer, decode_gpu=0, autocast=contextlib.nullcontext
    )
    walls, cpus, results = [], [], []
    for _ in range(VALIDATIONS):
        wall0, cpu0, child0 = time.perf_counter(), time.process_time(), children_cpu_s()
        result = validator.validate(model)
        predictions = validator.predictions(model)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0 + children_cpu_s() - child0)
        result.pop("val_time_s")
        results.append({"metrics": result, "predictions": [p["generated"] for p in predictions]})
    return {"wall_s": walls, "cpu_s": cpus, "validations": results}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each arm, alternating")
    parser.add_argument("--train-steps", type=int, default=150, help="steps of the default run trained first")
    parser.add_argument("--quick", action="store_true", help="1 round, 20 training steps (smoke run)")
    parser.add_argument("--out", default=None, help="results folder")
    args = parser.parse_args(argv)
    rounds, steps = (1, 20) if args.quick else (args.rounds, args.train_steps)
    os.environ["KVIDEO_CACHE"] = str(SAMPLE_CACHE)

    import torch
    from safetensors.torch import load_model

    from kvideo.config import config_from
    from kvideo.config.compose import compose_config
    from kvideo.data.tokenizer import build_tokenizer
    from kvideo.model.spec import build_model
    from kvideo.train.distributed import DistEnv

    cfg = config_from(compose_config(["trainer.device=cpu"]))
    tokenizer = build_tokenizer(cfg.data, cfg.model)
    env = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), is_main=True)
    with tempfile.TemporaryDirectory(prefix="kvideo_bench_") as tmp:
        weights = trained_weights(steps, Path(tmp) / "run")
        model = build_model(
            cfg.model,
            vocab_size=tokenizer.vocab_size,
            max_frames=cfg.video.max_frames,
            frame_size=cfg.video.frame_size,
        )
        load_model(model, str(weights))
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for _ in range(rounds):
        for arm in ARMS:
            runs[arm].append(run_arm(arm, cfg, model, tokenizer, env))
    summary = summarize(runs)
    data = {"machine": common.machine(), "train_steps": steps, "rounds": rounds, "runs": runs, **summary}
    path = common.write_result("validation", data, common.results_dir(args.quick, args.out))
    print(common.table(["measure", "value"], [[k, v] for k, v in summary.items() if not isinstance(v, dict)]))
    print(f"-> {path}")
    return 0 if summary["meets_target"] else 1


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per arm the mean over rounds of a run's validation wall and CPU time; the ratios; and
    whether every metric and generated caption of every validation matched today's exactly."""
    totals = {
        arm: {
            "run_wall_s": statistics.fmean(sum(r["wall_s"]) for r in arm_runs),
            "run_cpu_s": statistics.fmean(sum(r["cpu_s"]) for r in arm_runs),
            "first_wall_s": statistics.fmean(r["wall_s"][0] for r in arm_runs),
            "later_wall_s": statistics.fmean(w for r in arm_runs for w in r["wall_s"][1:]),
        }
        for arm, arm_runs in runs.items()
    }
    reference = [v["metrics"] for v in runs["today"][0]["validations"]]
    identical = all(
        [v["metrics"] for v in run["validations"]] == reference
        for arm_runs in runs.values()
        for run in arm_runs
    )
    wall_ratio = totals["decode_once"]["run_wall_s"] / totals["today"]["run_wall_s"]
    return {
        "arms": totals,
        "wall_ratio": wall_ratio,
        "cpu_ratio": totals["decode_once"]["run_cpu_s"] / totals["today"]["run_cpu_s"],
        "metrics_identical": identical,
        "target_wall_ratio": TARGET_WALL_RATIO,
        "meets_target": identical and wall_ratio <= TARGET_WALL_RATIO,
    }


if __name__ == "__main__":
    raise SystemExit(main())
