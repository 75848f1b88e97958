"""Run the CPU benchmark suite and write ``benchmarks/results/summary.md``.

``python -m benchmarks.run_all [--quick] [--profile]``: builds (or reuses) the corpus, then
runs decode, loader (once with ``decord_cpu``, once with ``pyav_cpu``), train_step, packing and
validation, each in
its own process (so one benchmark's memory or threads never colour the next one's numbers),
each writing its JSON. The summary starts with the decode arms table (CPU ms per clip at 16
and 8 frames and the ratio to the limit), then a Markdown table of the headline numbers and
every target's pass/fail, with the machine it was measured on. A benchmark that crashes is
reported as such; the others still run.

Smoke runs: ``--clips N --repeats 1 --out /tmp/dir --only decode,loader`` (nothing is
written into ``benchmarks/results/``).
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

from benchmarks import common, corpus, decode, fsdp_memory, loader

REPO = Path(__file__).resolve().parent.parent
LOADER_DECODERS = ("decord_cpu", "pyav_cpu")  # the first is the reference of the loader target
TARGET_LOADER_2W_OVER_DECORD = 1.2
BENCHMARKS = ("decode", "loader", "train_step", "packing", "validation")
THRESHOLDS = {
    "pyav_cpu_over_limit_le_1.10": "<= 1.10",
    "decord_cpu_over_pyav_cpu_ge_1.25": ">= 1.25",
    "pyav_cpu_over_decord_cpu_le_1.05_each_class": "<= 1.05 each",
    "pyav_cpu_frames_identical_to_decord_cpu": "0",
    "same_frame_indices": "0 each",
    "speedup_vs_baseline_ge_2.5": ">= 2.5",
    "kvideo_over_limit_le_1.3": "<= 1.3",
    "never_slower_than_baseline_per_class": ">= 1 each",
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
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def decode_section(dec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The arms table with its headline lines, and the decode rows of the results table."""
    if "arms" not in dec:  # written by an older version of benchmarks/decode.py
        return [], ["| decode | decode.json is from an older benchmark version | rerun | | |"]
    head = [
        f"## Decode: {dec['timer']} ms per clip, single thread, fastest of {dec.get('repeats', 1)} "
        f"({dec['clips_measured']} clips)",
        "",
        decode.arms_table(dec),
        "",
    ]
    head += [f"- {line}" for line in decode.headline(dec)] + [""]
    rows = []
    for mf, var in dec["variants"].items():
        o, classes = var["overall"], var["classes"]
        for ratio in ("pyav_cpu/limit", "decord_cpu/limit", "decord_cpu/pyav_cpu"):
            values = {c: _class_ratio(a, ratio) for c, a in classes.items()}
            rows.append(f"| decode ({mf} frames) | per class {ratio} | {_fmt(values)} | | info |")
        for name, t in var["targets"].items():
            rows.append(
                f"| decode ({mf} frames) | {name} | {_fmt(t['value'])} | {THRESHOLDS.get(name, '')} "
                f"| {_mark(t)} |"
            )
        if o["resized_max_abs_diff"] is not None:
            rows.append(
                f"| decode ({mf} frames) | pyav_cpu vs decord_cpu at {dec['resized_check_size']} px, "
                f"max / mean abs diff | {o['resized_max_abs_diff']} / "
                f"{o['resized_mean_abs_diff']:.3f} | | info |"
            )
        s = o["snap"]
        rows.append(
            f"| decode ({mf} frames) | snapping stamps to key/ref frames (tol "
            f"{dec['snap_tolerance_s']} s): pyav_cpu CPU saved, max shift, frames needed | "
            f"{s['saved_ms_per_clip']:.1f} ms/clip ({100 * s['saved_fraction']:.1f}%), "
            f"{s['max_shift_s']:.3f} s, {s['frames_needed']} -> {s['frames_needed_snapped']} "
            f"| | info |"
        )
        long_gop = classes.get("long")
        if long_gop:
            ls = long_gop["snap"]
            rows.append(
                f"| decode ({mf} frames) | snapping, long-GOP clips only | "
                f"{ls['saved_ms_per_clip']:.1f} ms/clip ({100 * ls['saved_fraction']:.1f}%), "
                f"{ls['max_shift_s']:.3f} s | | info |"
            )
    return head, rows


def _class_ratio(agg: dict[str, Any], ratio: str) -> float:
    num, den = ratio.split("/")
    if den == "limit":
        return agg["over_limit"][num]
    return agg[f"{num}_over_{den}"]


def loader_rows(loaders: dict[str, dict[str, Any]]) -> list[str]:
    """Per decoder: clips/s and targets; then pyav_cpu's 2-worker rate against decord_cpu's."""
    rows = []
    for name, load in loaders.items():
        d = load["decode_only"]
        rates = ", ".join(f"{s['num_workers']}w {s['clips_per_s']:.2f}" for s in load["settings"])
        rows.append(f"| loader ({name}) | clips/s: decode-only {d['clips_per_s']:.2f}; {rates} | | | |")
        for target, t in load["targets"].items():
            rows.append(
                f"| loader ({name}) | {target} | {_fmt(t['value'])} | {THRESHOLDS.get(target, '')} "
                f"| {_mark(t)} |"
            )
    ref_name, other = LOADER_DECODERS
    two = {
        name: next((s for s in load["settings"] if s["num_workers"] == 2), None)
        for name, load in loaders.items()
    }
    ref, new = two.get(ref_name), two.get(other)
    if ref and new:
        ratio = new["clips_per_s"] / ref["clips_per_s"]
        mark = "PASS" if ratio >= TARGET_LOADER_2W_OVER_DECORD else "FAIL"
        rows.append(
            f"| loader, 2 workers | {other} / {ref_name} clips/s ({new['clips_per_s']:.2f} / "
            f"{ref['clips_per_s']:.2f}; CPU ms/clip {1e3 * (new['cpu_s_per_clip'] or 0):.0f} / "
            f"{1e3 * (ref['cpu_s_per_clip'] or 0):.0f}) | {ratio:.2f} | "
            f">= {TARGET_LOADER_2W_OVER_DECORD} | {mark} |"
        )
    return rows


def packing_rows(packed: dict[str, Any] | None, validation: dict[str, Any] | None) -> list[str]:
    """Per corpus the packed arm nearest both packing targets, and validation's wall-time ratio."""
    rows = []
    targets = (packed or {}).get("targets", {})
    for corpus_name, arms in (packed or {}).get("results", {}).items():
        name, arm = max(
            ((n, a) for n, a in arms.items() if n != "padded"),
            key=lambda item: min(
                item[1]["token_efficiency"] / targets["token_efficiency"],
                item[1]["speedup_vs_padded"] / targets["speedup_vs_padded"],
            ),
        )
        ok = (
            arm["token_efficiency"] >= targets["token_efficiency"]
            and arm["speedup_vs_padded"] >= targets["speedup_vs_padded"]
        )
        mark = "PASS" if ok else "FAIL"
        rows.append(
            f"| packing ({corpus_name}) | {name}: token_efficiency, useful tokens/s vs padded | "
            f"{arm['token_efficiency']:.3f}, {arm['speedup_vs_padded']:.2f}x | "
            f">= {targets['token_efficiency']}, >= {targets['speedup_vs_padded']}x | {mark} |"
        )
    if validation:
        mark = "PASS" if validation["meets_target"] else "FAIL"
        rows.append(
            f"| validation (default run) | wall time vs before, metrics identical | "
            f"{validation['wall_ratio']:.2f}, {validation['metrics_identical']} | "
            f"<= {validation['target_wall_ratio']}, True | {mark} |"
        )
    return rows


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
    ]
    rows: list[str] = []
    dec = _load(folder, "decode")
    if dec:
        head, rows = decode_section(dec)
        lines += head
    prof = _load(folder, "decode_profile")
    if prof:
        r = prof["ratios"]["overall"]
        rows.append(
            f"| decode profile | baseline/kvideo, baseline/pyav_skip_nonref (experimental) | "
            f"{r['baseline_over_kvideo']:.2f}, {r['baseline_over_pyav_skip_nonref']:.2f} | | info |"
        )
    loaders = {name: load for name in LOADER_DECODERS if (load := _load(folder, loader.result_name(name)))}
    rows += loader_rows(loaders)
    train = _load(folder, "train_step")
    if train:
        if "error" in train:
            rows.append(f"| train_step | error | {train['error']} | | FAIL |")
        else:
            rows.append(
                f"| train_step (cpu, 2 workers) | whole-run data wait share | "
                f"{_fmt(train['whole_run_data_wait_share'])} | | info |"
            )
            for name, t in train["targets"].items():
                rows.append(
                    f"| train_step (cpu, 2 workers) | {name} (steady state) | {_fmt(t['value'])} "
                    f"| < 0.05 | {_mark(t)} |"
                )
    rows += packing_rows(_load(folder, "packing"), _load(folder, "validation"))
    sharded = _load(folder, "fsdp_memory")  # run on its own: python -m benchmarks.fsdp_memory
    if sharded:
        rows += fsdp_memory.summary_rows(sharded)
    lines += ["| benchmark | measure | value | target | result |", "|---|---|---|---|---|", *rows]
    lines += [
        "",
        "Details: the JSON files next to this one. Timings on a shared machine are noisy; "
        "decode ratios use CPU time (see benchmarks/decode.py).",
    ]
    return "\n".join(lines) + "\n"


def _benchmark_args(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each benchmark's command-line flags for this suite run."""
    common_flags = ["--quick"] if args.quick else []
    if args.out:
        common_flags += ["--out", args.out]
    clips = ["--clips", str(args.clips)] if args.clips else []
    epochs = ["--repeat", str(args.loader_repeat)] if args.loader_repeat else []
    return {
        "decode": [*common_flags, *clips, "--repeats", str(args.repeats)],
        "loader": [*common_flags, *clips, *epochs],
        "train_step": common_flags,
        "packing": common_flags,
        "validation": common_flags,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on the small corpus")
    parser.add_argument("--profile", action="store_true", help="also run the decode profile (~+100 s)")
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="only rewrite summary.md from the JSON files already there",
    )
    common.add_selection_args(parser)
    parser.add_argument(
        "--repeats", type=int, default=1, help="decode: runs of each arm per clip (the fastest is kept)"
    )
    parser.add_argument(
        "--loader-repeat", type=int, default=None, help="loader: epochs of the corpus per setting"
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)",
    )
    args = parser.parse_args(argv)
    folder = common.results_dir(args.quick, args.out)
    if args.summary_only:
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
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    flags = _benchmark_args(args)
    start = time.perf_counter()
    timings: dict[str, tuple[int, float]] = {}
    t0 = time.perf_counter()
    corpus.build(corpus.QUICK if args.quick else corpus.FULL)
    timings["corpus"] = (0, time.perf_counter() - t0)
    if "decode" in only:
        timings["decode"] = _run("decode", flags["decode"])
        if args.profile:
            timings["decode_profile"] = _run("decode", [*flags["decode"], "--profile"])
    if "loader" in only:
        for name in LOADER_DECODERS:
            timings[loader.result_name(name)] = _run("loader", [*flags["loader"], "--decoder", name])
    for name in ("train_step", "packing", "validation"):
        if name in only:
            timings[name] = _run(name, flags[name])
    total = time.perf_counter() - start
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
