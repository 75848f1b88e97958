"""Soak: 10,000 decodes through the training data path; worker memory must stay flat and the
decode rate must not decline.

Why: decord's known pain is memory growth with long-lived readers (its users' issue threads),
and a leak in a DataLoader worker only shows after thousands of samples, never in a unit test.
This runs ``kvideo.data.loader.build_dataset`` + ``build_loader`` exactly as the trainer does
(2 workers, one epoch over a corpus of at least ``--n`` clips, so the same two worker
processes serve every sample), and every 1000 clips records each worker's RSS (``VmRSS`` of
``/proc/<pid>/status`` for the child processes of this one; psutil is not a dependency) and
the clips/s of that window.

Targets (README, Benchmarks): worker RSS growth < 5 % from the first batch to the end; no decline in
clips/s (median of the second half of the windows >= 90 % of the first half's, the first
window left out). The peak RSS is recorded too: glibc's allocator makes RSS swing by tens of
MiB between windows without any leak.

Corpus: ``--corpus`` is a WebVid-layout root written by ``python -m kvideo.data.sample``
(default ``benchmarks/.corpus/soak``, generated there on first use: ~4 min on 2 cores).

    python -m benchmarks.soak [--corpus DIR] [--n 10000] [--workers 2] [hydra overrides...]

Writes ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common

DEFAULT_CORPUS = Path(__file__).resolve().parent / ".corpus" / "soak"
CORPUS_NAME = "sample"
WINDOW = 1000
RSS_GROWTH_TARGET = 0.05
DECLINE_TARGET = 0.90


def child_pids(parent: int | None = None) -> list[int]:
    """Live child processes of ``parent`` (default: this process), from /proc."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            pids.append(int(entry))
    return sorted(pids)


def worker_rss(exclude: set[int]) -> dict[int, float | None]:
    """RSS of the DataLoader workers: children that did not exist before the loader started."""
    return {pid: common.rss_mb(pid) for pid in child_pids() if pid not in exclude}


def ensure_corpus(root: Path, n: int) -> None:
    """Generate ``root``'s corpus if there is none; never touch an existing one (a smaller
    one is an error: ``sample.generate`` would replace it, and it may be someone's 10k corpus)."""
    from kvideo.data.datasets.sample import corpus as sample

    marker = sample.read_marker(root / "raw" / CORPUS_NAME)
    if marker is not None:
        if int(marker.get("n_train", 0)) < n:
            raise SystemExit(
                f"soak: {root} holds {marker.get('n_train')} clips, need {n}: pass --corpus "
                "with a bigger one (python -m kvideo.data.sample --out DIR --n N)"
            )
        return
    print(f"soak: generating a {n}-clip corpus under {root} (once)", flush=True)
    sample.generate(
        str(root), name=CORPUS_NAME, n_train=n, n_val=10, seed=0, workers=max(1, len(os.sched_getaffinity(0)))
    )


def build(corpus: Path, n: int, workers: int, batch_size: int, overrides: Sequence[str]) -> tuple[Any, Any]:
    import torch

    from kvideo.data.loader import build_dataset, build_loader
    from kvideo.data.settings import ClipSettings
    from kvideo.data.tokenizer import build_tokenizer
    from kvideo.tools.validate import scan_config

    cfg = scan_config(
        [
            "video/dataset=webvid",
            f"video.data_root={corpus}",
            f"video.dataset_name={CORPUS_NAME}",
            f"video.max_samples={n}",
            f"trainer.num_workers={workers}",
            *overrides,
        ]
    )
    dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data))
    if len(dataset) < n:
        raise SystemExit(f"soak: the corpus at {corpus} has {len(dataset)} clips, need {n} (one epoch)")
    batches = build_loader(
        dataset,
        shuffle=True,
        batch_size=batch_size,
        drop_last=False,
        device=torch.device("cpu"),
    )
    return cfg, batches


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_corpus(args.corpus, args.n)
    cfg, batches = build(args.corpus, args.n, args.workers, args.batch_size, args.overrides)
    load_before = os.getloadavg()
    others = set(child_pids())  # e.g. multiprocessing's resource tracker: not workers
    t0 = time.perf_counter()
    clips = skipped = 0
    start_rss: dict[int, float | None] = {}
    windows: list[dict[str, Any]] = []
    mark_t, mark_clips = t0, 0
    for batch in batches:
        n = len(batch["skip_reason"])
        clips += n
        skipped += sum(1 for r in batch["skip_reason"] if r)
        if not start_rss:
            start_rss = worker_rss(others)
            first_batch_s = time.perf_counter() - t0
            print(
                f"soak: first batch after {first_batch_s:.1f}s; worker RSS (MiB) at start: "
                + ", ".join(f"{pid}: {mb:.1f}" for pid, mb in start_rss.items() if mb),
                flush=True,
            )
            mark_t, mark_clips = time.perf_counter(), clips
        if clips - mark_clips >= WINDOW or clips >= args.n:
            now = time.perf_counter()
            rss = worker_rss(others)
            window = {
                "clips": clips,
                "clips_per_s": (clips - mark_clips) / (now - mark_t),
                "worker_rss_mb": {str(pid): mb for pid, mb in rss.items()},
                "main_rss_mb": common.rss_mb(),
                "elapsed_s": now - t0,
            }
            windows.append(window)
            print(
                f"soak: {clips:6d} clips  {window['clips_per_s']:6.1f} clips/s  worker RSS "
                + ", ".join(f"{mb:.1f}" for mb in rss.values() if mb)
                + " MiB",
                flush=True,
            )
            mark_t, mark_clips = now, clips
        if clips >= args.n:
            break
    end_rss = {int(pid): mb for pid, mb in windows[-1]["worker_rss_mb"].items()} if windows else {}
    del batches  # shuts the workers down
    return summarize(
        args, cfg, clips, skipped, start_rss, end_rss, windows, time.perf_counter() - t0, load_before
    )


def summarize(args, cfg, clips, skipped, start_rss, end_rss, windows, elapsed, load_before) -> dict[str, Any]:
    same_workers = sorted(start_rss) == sorted(end_rss)
    growth = {str(pid): (end_rss[pid] - mb) / mb for pid, mb in start_rss.items() if mb and end_rss.get(pid)}
    # Steady state: from the end of the first window (imports, first readers, allocator warm-up).
    first_window = {int(p): mb for p, mb in windows[0]["worker_rss_mb"].items()} if windows else {}
    growth_steady = {
        str(pid): (end_rss[pid] - mb) / mb for pid, mb in first_window.items() if mb and end_rss.get(pid)
    }
    # Decline: median clips/s of the second half of the windows over the first half's (the
    # first window, with worker start-up and page-cache warm-up, left out). Medians, because
    # on a shared machine single windows swing with other load.
    rates = [w["clips_per_s"] for w in windows[1:]] or [w["clips_per_s"] for w in windows]
    half = max(1, len(rates) // 2)
    first_half, second_half = rates[:half], rates[half:] or rates[-1:]
    decline_ratio = statistics.median(second_half) / statistics.median(first_half) if rates else None
    peak = {
        str(pid): max([mb or 0.0] + [w["worker_rss_mb"].get(str(pid)) or 0.0 for w in windows])
        for pid, mb in start_rss.items()
    }
    max_growth = max(growth.values(), default=None)
    result = {
        "clips": clips,
        "skipped": skipped,
        "elapsed_s": elapsed,
        "clips_per_s": clips / elapsed,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "frame_size": cfg.video.frame_size,
        "max_frames": cfg.video.max_frames,
        "corpus": str(args.corpus),
        "same_worker_processes_throughout": same_workers,
        "worker_rss_start_mb": {str(k): v for k, v in start_rss.items()},
        "worker_rss_end_mb": {str(k): v for k, v in end_rss.items()},
        "worker_rss_growth": growth,
        "worker_rss_growth_after_first_window": growth_steady,
        "worker_rss_peak_mb": peak,
        "windows": windows,
        "second_half_over_first_half_clips_per_s": decline_ratio,
        "targets": {
            "rss_growth_lt": RSS_GROWTH_TARGET,
            "rss_ok": max_growth is not None and max_growth < RSS_GROWTH_TARGET and same_workers,
            "no_decline_ratio_ge": DECLINE_TARGET,
            "no_decline_ok": decline_ratio is not None and decline_ratio >= DECLINE_TARGET,
        },
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": common.machine(),
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. video.frame_size=224")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--n", type=int, default=10_000, help="clips to decode (one epoch)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="results to the git-ignored quick folder")
    args = parser.parse_args(argv)
    result = run(args)
    path = common.write_result("soak", result, common.results_dir(args.quick))
    growth = ", ".join(f"{100 * g:+.1f}%" for g in result["worker_rss_growth"].values())
    steady = ", ".join(f"{100 * g:+.1f}%" for g in result["worker_rss_growth_after_first_window"].values())
    print(
        f"soak: {result['clips']} clips in {result['elapsed_s']:.0f}s ({result['clips_per_s']:.1f} clips/s); "
        f"worker RSS growth {growth} (after the first {WINDOW}: {steady}); "
        f"peak {', '.join(f'{mb:.0f}' for mb in result['worker_rss_peak_mb'].values())} MiB; "
        f"clips/s second half / first half = {result['second_half_over_first_half_clips_per_s']:.2f}; "
        f"targets: rss {'OK' if result['targets']['rss_ok'] else 'MISSED'}, "
        f"no decline {'OK' if result['targets']['no_decline_ok'] else 'MISSED'} -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
