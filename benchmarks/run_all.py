"""Run the CPU benchmark suite and write ``benchmarks/results/summary.md``.

``python -m benchmarks.run_all [--quick] [--profile]``: builds (or reuses) the corpus, then
runs decode, loader and train_step, each in its own process (so one benchmark's memory or
threads never colour the next one's numbers), each writing its JSON. The summary is a short
Markdown table of the headline numbers and every target's pass/fail, with the machine it
was measured on. A benchmark that crashes is reported as such; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common, corpus

REPO = Path(__file__).resolve().parent.parent
THRESHOLDS = {
    "speedup_vs_baseline_ge_2.5": ">= 2.5",
    "kvideo_over_limit_le_1.3": "<= 1.3",
    "never_slower_than_baseline_per_class": ">= 1 each",
    "same_frame_indices": "0",
    "2_workers_ge_1.8x_1_worker": ">= 1.8",
    "2_workers_ge_90pct_of_2x_decode_only": ">= 0.9",
    "worker_rss_flat_5pct": "<= 5 %",
    "data_wait_share_lt_5pct": "< 0.05",
}


def _run(module: str, args: Sequence[str]) -> tuple[int, float]:
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *args]
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    return rc, time.perf_counter() - t0


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _mark(target: dict[str, Any]) -> str:
    return "PASS" if target.get("pass") else "FAIL"


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.2f}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summary_markdown(folder: Path, timings: dict[str, tuple[int, float]], total_s: float) -> str:
    m = common.machine()
    v = m["versions"]
    lines = [
        "# kvideo benchmark summary",
        "",
        f"- Date: {m['date']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; load average at summary "
        f"{m['load_avg_at_start']}",
        f"- Versions: python {v['python']}, torch {v['torch']}, decord {v['decord']}, av {v['av']}, "
        f"numpy {v['numpy']}",
        f"- Suite wall time: {total_s:.0f} s ("
        + ", ".join(f"{k} {t:.0f} s" + ("" if rc == 0 else f" [exit {rc}]") for k, (rc, t) in timings.items())
        + ")",
        "",
        "| benchmark | measure | value | target | result |",
        "|---|---|---|---|---|",
    ]
    dec = _load(folder, "decode")
    if dec:
        timer = dec.get("timer", "cpu")
        for mf, var in dec["variants"].items():
            o = var["overall"]
            lines.append(f"| decode ({mf} frames, {timer} time) | kvideo / baseline / limit ms per clip | "
                         f"{o['kvideo_ms_per_clip']:.0f} / {o['baseline_ms_per_clip']:.0f} / "
                         f"{o['limit_ms_per_clip']:.0f} | | |")
            for name, t in var["targets"].items():
                limit = THRESHOLDS.get(name, "")
                lines.append(f"| decode ({mf} frames) | {name} | {_fmt(t['value'])} | {limit} | {_mark(t)} |")
            lines.append(f"| decode ({mf} frames) | best possible speedup (baseline / limit) | "
                         f"{o['baseline_over_limit']:.2f} | | info |")
            same = "PASS" if o["index_mismatches"] == 0 else "FAIL"
            lines.append(f"| decode ({mf} frames) | frame pixel diff max / mean, index mismatches | "
                         f"{o['frame_max_abs_diff_max']} / {o['frame_max_abs_diff_mean']:.2f}, "
                         f"{o['index_mismatches']} | 0 | {same} |")
    prof = _load(folder, "decode_profile")
    if prof:
        r = prof["ratios"]["overall"]
        lines.append(f"| decode profile | baseline/kvideo, baseline/pyav_skip_nonref (experimental) | "
                     f"{r['baseline_over_kvideo']:.2f}, {r['baseline_over_pyav_skip_nonref']:.2f} | | info |")
    load = _load(folder, "loader")
    if load:
        d = load["decode_only"]
        rates = ", ".join(f"{s['num_workers']}w {s['clips_per_s']:.2f}" for s in load["settings"])
        lines.append(f"| loader | clips/s: decode-only {d['clips_per_s']:.2f}; {rates} | | | |")
        for name, t in load["targets"].items():
            limit = THRESHOLDS.get(name, "")
            lines.append(f"| loader | {name} | {_fmt(t['value'])} | {limit} | {_mark(t)} |")
    train = _load(folder, "train_step")
    if train:
        if "error" in train:
            lines.append(f"| train_step | error | {train['error']} | | FAIL |")
        else:
            lines.append(f"| train_step (cpu, 2 workers) | whole-run data wait share | "
                         f"{_fmt(train['whole_run_data_wait_share'])} | | info |")
            for name, t in train["targets"].items():
                lines.append(f"| train_step (cpu, 2 workers) | {name} (steady state) | {_fmt(t['value'])} "
                             f"| < 0.05 | {_mark(t)} |")
    lines += ["", "Details: the JSON files next to this one. Timings on a shared machine are noisy; "
              "decode ratios use CPU time (see benchmarks/decode.py)."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on the small corpus")
    parser.add_argument("--profile", action="store_true", help="also run the decode profile (~+100 s)")
    parser.add_argument("--summary-only", action="store_true",
                        help="only rewrite summary.md from the JSON files already there")
    args = parser.parse_args(argv)
    if args.summary_only:
        folder = common.results_dir(args.quick)
        previous = folder / "summary.md"
        key = "- Suite wall time"
        old = previous.read_text().splitlines() if previous.is_file() else []
        note = next((x for x in old if x.startswith(key)), "")
        text = summary_markdown(folder, {}, 0.0)
        if note:  # keep the timing of the full run the JSON files came from
            text = "\n".join(note if x.startswith(key) else x for x in text.splitlines()) + "\n"
        (folder / "summary.md").write_text(text)
        print(text)
        return 0
    flag = ["--quick"] if args.quick else []
    start = time.perf_counter()
    timings: dict[str, tuple[int, float]] = {}
    t0 = time.perf_counter()
    corpus.build(corpus.QUICK if args.quick else corpus.FULL)
    timings["corpus"] = (0, time.perf_counter() - t0)
    timings["decode"] = _run("decode", flag)
    if args.profile:
        timings["decode_profile"] = _run("decode", [*flag, "--profile"])
    timings["loader"] = _run("loader", flag)
    timings["train_step"] = _run("train_step", flag)
    total = time.perf_counter() - start
    folder = common.results_dir(args.quick)
    text = summary_markdown(folder, timings, total)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "summary.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / "summary.md")
    print("\n" + text)
    print(f"wrote {folder / 'summary.md'}; suite took {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
