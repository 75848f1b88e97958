"""Memory per rank at 2 ranks on the CPU: DDP vs FSDP2, each with and without activation
checkpointing, for a ~100M-parameter builtin model (``trainer.strategy``,
``model.activation_checkpointing``).

Each setting runs on 2 gloo ranks (forked, one thread each) through the trainer's own parts:
``build_model``, DDP (``wrap_model``) or ``apply_fsdp``, ``ScheduledOptimizer`` (AdamW, clip),
a few steps on batches of the real shapes (frames, masks, caption ids). Per rank it records:

* the parameter, gradient and optimizer-state bytes, counted exactly after the backward of the
  last step: the sum over the tensors this rank holds of ``numel * element_size`` (a DTensor's
  local shard; FSDP2 pads a shard to an equal size on every rank, which the local shard does
  not count, so the padding, at most world_size - 1 elements per parameter, is left out);
  DDP's gradient buckets (another copy of the gradients) are not in it, they are in the RSS;
* the process's peak RSS (``VmHWM``, reset when the rank starts), over the whole run (FSDP
  builds the model whole on every rank before sharding it) and over the training steps alone
  (reset once the model, the wrapper and the optimizer are built), with glibc's mmap threshold
  fixed so that freed tensors leave the RSS (``fixed_mmap_threshold``);
* the seconds per step (informative: two ranks share two cores here).

Target (DESIGN "Targets"): FSDP at 2 ranks holds <= 0.6x DDP's parameter + gradient + optimizer
memory per rank. Writes ``benchmarks/results/fsdp_memory.json``; ``summary_rows`` gives its lines
of ``summary.md``.

``python -m benchmarks.fsdp_memory [--steps N] [--quick] [--out DIR]``
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common

WORLD = 2
TARGET_STATE_RATIO = 0.6
SETTINGS = (("ddp", False), ("ddp", True), ("fsdp", False), ("fsdp", True))
# ~97M parameters: a 12-block LM 768 wide (GPT-2 small's shape) over a 6-block ViT 384 wide.
MODEL = dict(
    patch_size=16,
    vision_width=384,
    vision_depth=6,
    vision_heads=6,
    tokens_per_frame=16,
    lm_width=768,
    lm_depth=12,
    lm_heads=12,
    max_seq_len=256,
    max_text_len=48,
)
QUICK_MODEL = dict(
    MODEL, vision_width=64, vision_depth=1, vision_heads=2, lm_width=64, lm_depth=2, lm_heads=2
)
# Per rank: 4 clips of 4 frames at 64 px -> 4 * (4 * 16 + 48) = 448 LM tokens a step.
BATCH = {"clips": 4, "frames": 4, "frame_size": 64}
VOCAB = 259  # the byte-level tokenizer's
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 1 << 20  # blocks of 1 MiB and more are mapped (and unmapped when freed)


def setting_name(strategy: str, checkpointing: bool) -> str:
    return strategy + ("+ac" if checkpointing else "")


def fixed_mmap_threshold() -> bool:
    """Make RSS follow the live tensors: allocations over ``MMAP_THRESHOLD`` get their own
    mapping, returned to the system when freed.

    glibc's threshold starts at 128 KiB and rises to the size of each mapped block freed (up to
    32 MiB on 64-bit): after the first freed tensor of a size, later ones of that size come from
    the heap and stay resident when freed, so the RSS of a run that builds a model whole and
    then shards it, or gathers one block after another, keeps what it no longer holds. Setting
    the threshold (``mallopt(M_MMAP_THRESHOLD)``) turns that adjustment off. False where the C
    library has no ``mallopt`` (not glibc): the RSS figures then include the allocator's cache.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def _local_bytes(tensor: Any) -> int:
    from torch.distributed.tensor import DTensor

    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return int(local.numel() * local.element_size())


def _state_bytes(model: Any, optimizer: Any) -> dict[str, int]:
    params = list(model.parameters())
    states = [v for state in optimizer.state.values() for v in state.values() if hasattr(v, "numel")]
    counts = {
        "parameters": sum(_local_bytes(p) for p in params),
        "gradients": sum(_local_bytes(p.grad) for p in params if p.grad is not None),
        "optimizer": sum(_local_bytes(v) for v in states),
    }
    counts["total"] = sum(counts.values())
    return counts


def _rank(
    rank: int,
    strategy: str,
    checkpointing: bool,
    model_fields: dict[str, Any],
    steps: int,
    out: str,
) -> None:
    fixed = fixed_mmap_threshold()
    common.reset_peak_rss()
    import torch

    torch.set_num_threads(1)
    from kvideo.config import ModelConfig, TrainerConfig
    from kvideo.model import build_model
    from kvideo.model.blocks import transformer_blocks
    from kvideo.train.distributed import cleanup, init_distributed, wrap_model
    from kvideo.train.fsdp import apply_fsdp
    from kvideo.train.optim import ScheduledOptimizer

    baseline = common.rss_mb()
    env = init_distributed("cpu")
    try:
        torch.manual_seed(0)
        cfg = ModelConfig(**model_fields, activation_checkpointing=checkpointing)
        raw = build_model(cfg, vocab_size=VOCAB, max_frames=BATCH["frames"], frame_size=BATCH["frame_size"])
        params = sum(p.numel() for p in raw.parameters())
        if strategy == "fsdp":
            apply_fsdp(raw, env, units=transformer_blocks(raw), compute_dtype=None, cpu_offload=False)
            model = raw
        else:
            model = wrap_model(raw, env)
        optimizer = ScheduledOptimizer(
            raw, TrainerConfig(lr=1e-4, warmup_steps=0, max_steps=steps), fused=False
        )
        setup_peak = common.peak_rss_mb()
        common.reset_peak_rss()
        generator = torch.Generator().manual_seed(rank)
        b, f, s = BATCH["clips"], BATCH["frames"], BATCH["frame_size"]
        step_s, state = [], {}
        for _ in range(steps):
            t0 = time.perf_counter()
            frames = torch.randn(b, f, 3, s, s, generator=generator)
            ids = torch.randint(0, VOCAB, (b, cfg.max_text_len), generator=generator)
            loss = model(frames, torch.ones(b, f, dtype=torch.bool), ids, ids)["loss"]
            loss.backward()
            state = _state_bytes(raw, optimizer.optimizer)  # gradients present; moments from step 2 on
            optimizer.apply_gradients(optimizer.gradient_norm())
            step_s.append(time.perf_counter() - t0)
        train_peak = common.peak_rss_mb()
        result = {
            "rank": rank,
            "fixed_mmap_threshold": fixed,
            "parameters_in_model": params,
            "state_bytes": state,
            "baseline_rss_mb": baseline,
            "peak_rss_mb": max(setup_peak or 0.0, train_peak or 0.0),
            "peak_rss_training_mb": train_peak,
            "step_s": step_s,
        }
        Path(out, f"{strategy}_{int(checkpointing)}_rank{rank}.json").write_text(json.dumps(result))
        del model, raw
    finally:
        cleanup(env)


def measure(
    strategy: str, checkpointing: bool, model_fields: dict[str, Any], steps: int, out: Path
) -> list[dict[str, Any]]:
    from tests.helpers.ranks import run_ranks  # torchrun's variables, forked ranks

    run_ranks(_rank, WORLD, strategy, checkpointing, model_fields, steps, str(out))
    return [
        json.loads((out / f"{strategy}_{int(checkpointing)}_rank{r}.json").read_text()) for r in range(WORLD)
    ]


def _mib(n: float) -> float:
    return n / 2**20


def summary_rows(result: dict[str, Any]) -> list[str]:
    """This benchmark's lines of the ``summary.md`` table."""
    runs = result["runs"]
    target = result["targets"]["fsdp_state_le_0.6_ddp"]
    ddp, fsdp = (runs[name]["state_mib_per_rank"] for name in ("ddp", "fsdp"))
    where = f"fsdp_memory ({WORLD} ranks, cpu, {result['model']['parameters'] / 1e6:.0f}M builtin)"
    peaks = ", ".join(f"{name} {run['peak_rss_training_mb_max']:.0f}" for name, run in runs.items())
    return [
        f"| {where} | FSDP / DDP parameter+gradient+optimizer bytes per rank ({fsdp:.0f} / {ddp:.0f} MiB) "
        f"| {target['value']:.3f} | <= {TARGET_STATE_RATIO} | {'PASS' if target['pass'] else 'FAIL'} |",
        f"| {where} | peak RSS per rank while training, MiB | {peaks} | | info |",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per setting (default 3)")
    parser.add_argument("--quick", action="store_true", help="a tiny model: a smoke run of the harness")
    parser.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"  # two ranks on two cores: one thread each
    model_fields = QUICK_MODEL if args.quick else MODEL
    machine = common.machine()
    runs: dict[str, Any] = {}
    scratch = common.QUICK_RESULTS_DIR / "fsdp_memory_ranks"
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for strategy, checkpointing in SETTINGS:
        name = setting_name(strategy, checkpointing)
        print(f"=== {name}", flush=True)
        ranks = measure(strategy, checkpointing, model_fields, args.steps, scratch)
        runs[name] = {
            "ranks": ranks,
            "state_mib_per_rank": max(_mib(r["state_bytes"]["total"]) for r in ranks),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in ranks),
            "peak_rss_training_mb_max": max(r["peak_rss_training_mb"] for r in ranks),
            "step_s_last": max(r["step_s"][-1] for r in ranks),
        }
        run = runs[name]
        print(
            f"{name}: state {run['state_mib_per_rank']:.1f} MiB/rank, peak RSS {run['peak_rss_mb_max']:.0f} "
            f"MiB (training {run['peak_rss_training_mb_max']:.0f}), {run['step_s_last']:.1f} s/step",
            flush=True,
        )
    ratio = runs["fsdp"]["state_mib_per_rank"] / runs["ddp"]["state_mib_per_rank"]
    result = {
        "machine": machine,
        "world_size": WORLD,
        "model": {
            **model_fields,
            "parameters": runs["ddp"]["ranks"][0]["parameters_in_model"],
            "vocab": VOCAB,
        },
        "batch_per_rank": BATCH,
        "malloc_mmap_threshold_bytes": MMAP_THRESHOLD,
        "steps": args.steps,
        "wall_s": time.perf_counter() - t0,
        "runs": runs,
        "ratios": {
            "fsdp_over_ddp_state": ratio,
            "fsdp_ac_over_ddp_ac_state": runs["fsdp+ac"]["state_mib_per_rank"]
            / runs["ddp+ac"]["state_mib_per_rank"],
            "fsdp_over_ddp_peak_rss_training": runs["fsdp"]["peak_rss_training_mb_max"]
            / runs["ddp"]["peak_rss_training_mb_max"],
            "ddp_ac_over_ddp_peak_rss_training": runs["ddp+ac"]["peak_rss_training_mb_max"]
            / runs["ddp"]["peak_rss_training_mb_max"],
            "fsdp_ac_over_fsdp_peak_rss_training": runs["fsdp+ac"]["peak_rss_training_mb_max"]
            / runs["fsdp"]["peak_rss_training_mb_max"],
        },
        "targets": {
            "fsdp_state_le_0.6_ddp": {
                "value": ratio,
                "target": TARGET_STATE_RATIO,
                "pass": ratio <= TARGET_STATE_RATIO,
            }
        },
    }
    path = common.write_result("fsdp_memory", result, common.results_dir(args.quick, args.out))
    print("\n".join(summary_rows(result)))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
