"""Listing a webdataset corpus at scale: every tar header read, against the listing cache.

A corpus of ``--shards`` shards (1,000) of ``--samples`` samples (100), each sample a small video
member, its caption and its metadata (what video2dataset writes; listing never decodes the video,
so its bytes are tiny). Arms, each in a fresh process (``build_webdataset`` on the train split, as
``train.py`` lists it):

* ``uncached``: ``data.listing_cache=false``, every header and caption read (every run and every
  rank before issue #27);
* ``cold``: the cache on and empty: the same reading, plus writing one entry per shard;
* ``warm``: the cache filled by the ``cold`` arm just before: one small file read per shard;
* ``rank0`` / ``rank1``: two processes started together (``RANK``, ``WORLD_SIZE=2``) on an empty
  cache: each lists half the shards first, then reads the other's entries (listing the ones not
  there yet itself).

Rounds alternate the arms. Timed: wall and process CPU time of the listing (the interpreter's
start-up excluded). Target (issue #27): a warm listing at least 20x faster than a cold one.
Writes ``benchmarks/results/listing.json``.

``python -m benchmarks.listing [--shards 1000] [--samples 100] [--rounds 2] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.corpus import CORPUS_ROOT

REPO = Path(__file__).resolve().parent.parent
TARGET_WARM_SPEEDUP = 20.0


def write_corpus(root: Path, shards: int, samples: int) -> Path:
    """``root/train/NNNNN.tar``, unless a complete corpus of this size is already there."""
    folder = root / f"listing_{shards}x{samples}" / "train"
    done = folder / ".complete"
    if done.exists():
        return folder.parent
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    video = os.urandom(300)
    for k in range(shards):
        with tarfile.open(folder / f"{k:05d}.tar", "w") as tar:
            for i in range(samples):
                key = f"{k:05d}{i:04d}"
                caption = f"a clip of sample {key} moving left".encode()
                meta = json.dumps({"key": key, "caption": caption.decode(), "duration": 2.0}).encode()
                for ext, data in (("mp4", video), ("txt", caption), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, BytesIO(data))
    done.touch()
    return folder.parent


def list_once(root: str, cache: bool) -> dict[str, Any]:
    """One listing in this process: its wall and CPU seconds and the rows it found."""
    from kvideo.config import DataConfig, VideoConfig
    from kvideo.data.datasets.webdataset import build_webdataset

    video = VideoConfig(data_root=root, dataset_type="webdataset")
    data = DataConfig(listing_cache=cache)
    t0, c0 = time.perf_counter(), time.process_time()
    rows = build_webdataset(video, data, split="train", max_samples=0)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "rows": len(rows)}


def _spawn(root: Path, cache_dir: Path, cache: bool, **env: str) -> subprocess.Popen[str]:
    code = (
        "import json, sys; from benchmarks.listing import list_once; "
        f"print(json.dumps(list_once({str(root)!r}, {cache})))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "KVIDEO_CACHE": str(cache_dir), **env},
        stdout=subprocess.PIPE,
        text=True,
    )


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"a listing process failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def one_round(root: Path) -> dict[str, dict[str, Any]]:
    """Every arm once, in order (the warm arm reads what the cold one wrote)."""
    with tempfile.TemporaryDirectory(prefix="listing_cache_") as tmp:
        cache = Path(tmp)
        arms = {"uncached": _result(_spawn(root, cache / "unused", False))}
        arms["cold"] = _result(_spawn(root, cache / "one", True))
        arms["warm"] = _result(_spawn(root, cache / "one", True))
        pair = [_spawn(root, cache / "two", True, RANK=str(r), WORLD_SIZE="2") for r in range(2)]
        arms["rank0"], arms["rank1"] = (_result(p) for p in pair)
    return arms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 shards, one round (a smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.shards, args.rounds = 20, 1
    root = write_corpus(CORPUS_ROOT, args.shards, args.samples)
    rounds = [one_round(root) for _ in range(args.rounds)]
    arms = {
        arm: {key: statistics.median(r[arm][key] for r in rounds) for key in ("wall_s", "cpu_s")}
        | {"rows": rounds[0][arm]["rows"]}
        for arm in rounds[0]
    }
    speedup_wall = arms["cold"]["wall_s"] / arms["warm"]["wall_s"]
    speedup_cpu = arms["cold"]["cpu_s"] / arms["warm"]["cpu_s"]
    result = {
        "machine": common.machine(),
        "shards": args.shards,
        "samples_per_shard": args.samples,
        "rounds": args.rounds,
        "arms": arms,
        "per_round": rounds,
        "warm_speedup_wall": speedup_wall,
        "warm_speedup_cpu": speedup_cpu,
        "target_warm_speedup": TARGET_WARM_SPEEDUP,
        "meets_target": min(speedup_wall, speedup_cpu) >= TARGET_WARM_SPEEDUP,
    }
    path = common.write_result("listing", result, common.results_dir(args.quick, args.out))
    rows = [[arm, a["rows"], a["wall_s"], a["cpu_s"]] for arm, a in arms.items()]
    print(common.table(["arm", "rows", "wall s", "cpu s"], rows))
    print(
        f"warm vs cold: {speedup_wall:.1f}x wall, {speedup_cpu:.1f}x cpu "
        f"(target {TARGET_WARM_SPEEDUP:g}x) -> {path}"
    )


if __name__ == "__main__":
    main()
