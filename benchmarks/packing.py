"""Packing and token-budget batches against padded batches, on a video instruction corpus whose
answer lengths mix as LLaVA-Video-178K's do.

Why this mix: LLaVA-Video-178K (Zhang et al., 2024) holds 178,510 detailed captions, 960,792
open-ended answers and 196,198 multiple-choice answers, so 13% of its records are captions of
hundreds of tokens, 72% open-ended answers of a sentence or two and 15% answers of a letter or a
word. Here each record is one question about a clip, answered by: a caption of 100-300 tokens
(13%), an open-ended answer of 10-40 tokens (72%) or a choice of 1-5 tokens (15%), after a
question of 20-60 tokens. Tokens are bytes for the builtin model's byte tokenizer; the hf arm's
BPE tokenizer reads the same text in fewer tokens, so its rows hold less text.

Two corpora, the same records:

* ``square``: ``model=tiny_vlm`` (its 16 visual tokens a frame), 8 frames of 64 px, clips 4 s;
* ``max_pixels``: ``model=hf_vlm`` on tiny parts made with transformers' own classes
  (``tests/helpers/hf_models.py``), ``video.resize=max_pixels`` over clips of 3 aspect ratios
  (16:9, 1:1, 9:16), so every clip brings its own number of visual tokens.

Four arms each, the same weights at the start: ``padded`` (8 clips a batch, today's layout),
``packed`` (``data.packing=true``, 8 clips, rows no longer than a padded one, the default),
``packed_long_rows`` (rows of up to ``LONG_ROW_TOKENS``: less row-end padding, more attention
per row, since CPU attention computes the whole masked square), and ``budget`` (packed, with
``data.batch_tokens`` holding about as many tokens as 8 clips do, grouped by length). The
batches come from the real loader (``build_loader``, 2 workers) before timing; then the arms take
training steps
(forward, backward, AdamW) in turn, one step each, timed in process CPU time, so a busy machine
slows every arm alike. Reported per arm: ``token_efficiency`` (real tokens / token slots the LM
computed, the ``metrics.jsonl`` key), useful tokens and clips per CPU second, and the ratios to
``padded``.

Targets (issue #25): ``token_efficiency`` >= 0.95 packed; useful tokens/s >= 1.5x padded (met
when some packed arm meets both on each corpus; every arm is reported).
Writes ``benchmarks/results/packing.json``.

``python -m benchmarks.packing [--steps 12] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.corpus import CORPUS_ROOT

RECORDS = 256
LONG_ROW_TOKENS = 1024  # twice a padded row (352 text + 8 frames' visual tokens, up to 512)
BATCH = 8
MIX = (  # share of records, answer tokens (low, high): LLaVA-Video-178K's kinds of answer
    (0.13, (100, 300)),  # detailed caption
    (0.72, (10, 40)),  # open-ended answer
    (0.15, (1, 5)),  # multiple choice
)
SIZES = {"square": [(64, 64)], "max_pixels": [(112, 64), (80, 80), (64, 112)]}  # (width, height)
TARGET_EFFICIENCY = 0.95
TARGET_SPEEDUP = 1.5
COMMON = [
    "video/dataset=conversations",
    "video.max_frames=8",
    "video.min_frames=8",
    "video.fps=2",
    "model.max_text_len=352",
    "model.max_seq_len=512",
    f"trainer.batch_size={BATCH}",
    "trainer.num_workers=2",
    "trainer.device=cpu",
]


def text_of(tokens: int, rng: np.random.Generator) -> str:
    """About ``tokens`` bytes of lowercase words."""
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < tokens:
        words.append("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), int(rng.integers(2, 8)))))
    return " ".join(words)[: max(1, tokens)]


def write_corpus(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """Clips of ``sizes`` and ``RECORDS`` one-question records over them (``records.jsonl``)."""
    from tests.helpers.videos import make_h264

    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for k in range(12):
        width, height = sizes[k % len(sizes)]
        clips.append(make_h264(root / f"clip{k}.mp4", seconds=4.0, fps=8, width=width, height=height, gop=16))
    rng = np.random.default_rng(0)
    shares = [share for share, _ in MIX]
    with open(root / "records.jsonl", "w") as out:
        for i in range(RECORDS):
            low, high = MIX[int(rng.choice(len(MIX), p=shares))][1]
            question = text_of(int(rng.integers(20, 61)), rng)
            answer = text_of(int(rng.integers(low, high + 1)), rng)
            record = {
                "id": str(i),
                "video": os.path.basename(clips[i % len(clips)]),
                "conversations": [
                    {"from": "human", "value": f"<video>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
            out.write(json.dumps(record) + "\n")
    return root / "records.jsonl"


def arm_overrides(corpus: str, parts: tuple[Path, Path] | None, row_tokens: int) -> dict[str, list[str]]:
    """Each arm's ``train.py`` overrides for ``corpus`` (``square`` or ``max_pixels``)."""
    if parts is None:
        model = ["model=tiny_vlm", "video.frame_size=64"]
    else:
        model = [
            "model=hf_vlm",
            f"model.vision_path={parts[0]}",
            f"model.lm_path={parts[1]}",
            "model.tokens_per_frame=4",
            "model.freeze=[]",
            "video.frame_size=64",
            "video.resize=max_pixels",
            f"video.max_pixels={128 * 128}",
        ]
    packed = [*model, "data.packing=true"]
    return {
        "padded": model,
        "packed": packed,
        "packed_long_rows": [*packed, f"data.max_tokens_per_row={row_tokens}"],
        "budget": packed,
    }


def measure(
    corpus: str, records: Path, parts: tuple[Path, Path] | None, steps: int, row_tokens: int
) -> dict[str, Any]:
    """Build each arm's batches and model, then time their steps in turn (module docstring)."""
    import torch

    from kvideo.config import config_from
    from kvideo.config.compose import compose_config
    from kvideo.data.batch import forward_inputs
    from kvideo.data.loader import build_dataset, build_loader
    from kvideo.data.settings import ClipSettings
    from kvideo.data.tokenizer import build_tokenizer
    from kvideo.model.spec import build_model

    arms: dict[str, Any] = {}
    for arm, overrides in arm_overrides(corpus, parts, row_tokens).items():
        cfg = config_from(compose_config([*COMMON, f"video.data_root={records}", *overrides]))
        tokenizer = build_tokenizer(cfg.data, cfg.model)
        dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=tokenizer)
        if arm == "budget":  # about the real tokens of BATCH clips, as an upper bound counts them
            costs = dataset.token_costs()
            cfg.data.batch_tokens = int(BATCH * statistics.fmean(costs))
        loader = build_loader(
            dataset,
            batch_size=BATCH,
            batch_tokens=cfg.data.batch_tokens,
            device=torch.device("cpu"),
            shuffle=True,
            drop_last=True,
        )
        batches = [batch for _, batch in zip(range(steps), loader, strict=False)]
        torch.manual_seed(0)
        model = build_model(
            cfg.model,
            vocab_size=tokenizer.vocab_size,
            max_frames=cfg.video.max_frames,
            frame_size=cfg.video.frame_size,
            resize=cfg.video.resize,
            max_tokens_per_row=cfg.data.packed_row_tokens,
        )
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        arms[arm] = {"batches": batches, "model": model.train(), "optimizer": optimizer, "steps": []}
    torch.set_num_threads(2)
    for step in range(steps):
        for arm in arms.values():  # interleaved: one step of each arm in turn
            model, optimizer = arm["model"], arm["optimizer"]
            batch = arm["batches"][step % len(arm["batches"])]
            cpu0 = time.process_time()
            out = model(
                batch["frames"],
                batch["frame_mask"],
                batch["input_ids"],
                batch["labels"],
                frame_times=batch["frame_times"],
                **forward_inputs(batch),
            )
            out["loss"].backward()  # one optimizer step
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            cpu = time.process_time() - cpu0
            arm["steps"].append(
                {
                    "cpu_s": cpu,
                    "clips": len(batch["skip_reason"]),
                    "tokens": int(out["tokens"]),
                    "computed_tokens": int(out["computed_tokens"]),
                    "loss": float(out["loss"].detach()),
                }
            )
    return {name: summarize_arm(arm["steps"]) for name, arm in arms.items()}


def summarize_arm(steps: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = sum(s["cpu_s"] for s in steps)
    tokens = sum(s["tokens"] for s in steps)
    return {
        "steps": len(steps),
        "token_efficiency": tokens / sum(s["computed_tokens"] for s in steps),
        "useful_tokens_per_cpu_s": tokens / cpu,
        "clips_per_cpu_s": sum(s["clips"] for s in steps) / cpu,
        "clips_per_step": statistics.fmean(s["clips"] for s in steps),
        "losses_finite": all(np.isfinite(s["loss"]) for s in steps),
        "per_step": steps,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per arm and corpus")
    parser.add_argument("--quick", action="store_true", help="3 steps per arm (smoke run)")
    parser.add_argument(
        "--row-tokens", type=int, default=LONG_ROW_TOKENS, help="data.max_tokens_per_row of packed_long_rows"
    )
    parser.add_argument("--out", default=None, help="results folder")
    args = parser.parse_args(argv)
    steps = 3 if args.quick else args.steps
    os.environ.setdefault("KVIDEO_CACHE", str(CORPUS_ROOT / "kvideo_cache"))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kvideo_packing_") as tmp:
        from tests.helpers.hf_models import save_tiny_parts

        parts = save_tiny_parts(Path(tmp) / "parts")
        for corpus, sizes in SIZES.items():
            records = write_corpus(Path(tmp) / corpus, sizes)
            part = parts if corpus == "max_pixels" else None
            results[corpus] = measure(corpus, records, part, steps, args.row_tokens)
    rows, meets = [], True  # met when, on each corpus, some packed arm meets both targets
    for corpus, arms in results.items():
        padded = arms["padded"]["useful_tokens_per_cpu_s"]
        for name, arm in arms.items():
            arm["speedup_vs_padded"] = arm["useful_tokens_per_cpu_s"] / padded
            rows.append(
                [
                    corpus,
                    name,
                    arm["token_efficiency"],
                    arm["useful_tokens_per_cpu_s"],
                    arm["clips_per_cpu_s"],
                    arm["speedup_vs_padded"],
                ]
            )
        meets &= any(
            arm["token_efficiency"] >= TARGET_EFFICIENCY and arm["speedup_vs_padded"] >= TARGET_SPEEDUP
            for name, arm in arms.items()
            if name != "padded"
        )
    headers = ["corpus", "arm", "token_efficiency", "useful tokens/CPU s", "clips/CPU s", "vs padded"]
    data = {
        "machine": common.machine(),
        "steps": steps,
        "row_tokens": args.row_tokens,
        "mix": MIX,
        "targets": {"token_efficiency": TARGET_EFFICIENCY, "speedup_vs_padded": TARGET_SPEEDUP},
        "meets_targets": meets,
        "results": results,
    }
    path = common.write_result("packing", data, common.results_dir(args.quick, args.out))
    print(common.table(headers, rows))
    print(f"meets targets: {meets} -> {path}")
    return 0 if meets else 1


if __name__ == "__main__":
    raise SystemExit(main())
