"""The one prepared check for a GPU machine: ``python -m benchmarks.gpu_check`` (about 6 minutes).

In order, each section's numbers printed as it ends and all of them written to
``benchmarks/results/gpu.json``:

1. **NVDEC probe** (``kvideo.decode.nvdec_probe``): without the driver's NVDEC libraries, CUDA or
   PyNvVideoCodec, it stops here in one line saying which, exit 2.
2. **Decoding** (``benchmarks.gpu.decoding``): the benchmark corpus (``benchmarks.corpus``, built
   on the machine) with ``nvdec`` and ``pyav_cpu``: the same display times (hence indices), the
   pixel difference, clips/s at 1, 2 and 4 streams against CPU decode workers on every core, peak
   device memory and its flatness over three passes.
3. **Training** (``benchmarks.gpu.training``): bf16 steps of the default model, of ``hf_vlm`` at
   SigLIP-base + Qwen2-0.5B shapes and of ``model=pretrained`` at Qwen2.5-VL-3B shapes, with CPU
   workers and with ``nvdec``: step time, tokens/s, MFU, data-wait share, peak memory.
4. **Processors** (``benchmarks.gpu.processors``): what the pretrained route feeds each released
   family against transformers' own processors (torchvision loads there).

The headline keys: ``nvdec_vs_cpu_max_abs_diff``, ``nvdec_clips_per_s``, ``data_wait_share`` and
``targets`` (frames at the same indices and times; data wait below 5% at the realistic shapes;
NVDEC at least 3x the CPU workers' clips/s; device memory flat within 5%).

``--smoke`` runs the same code on CPU, as CI does: a few small clips, a CPU frame reader in
PyNvVideoCodec's place (``tests.helpers.nvdec_standin``), tiny shapes; it writes the same keys
(to ``--out``). ``make gpu-carry`` builds the wheels the machine lacks (``benchmarks.gpu.carry``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.helpers: the tiny models and the CPU frame reader

from benchmarks import common  # noqa: E402
from benchmarks.corpus import FULL, QUICK, CorpusConfig, build  # noqa: E402

SMOKE_CORPUS = CorpusConfig(
    name="gpu-smoke", n_long=1, n_short=2, n_720p=0, width=96, height=64, duration_range=(1.5, 2.5)
)
WAIT_TARGET, SPEEDUP_TARGET = 0.05, 3.0
REALISTIC = ("hf_vlm", "pretrained")


def say(section: str, result: Any) -> None:
    print(json.dumps({section: result}, default=str), flush=True)


def nvdec_unusable() -> str | None:
    """Why this machine cannot run the check's GPU sections, or None."""
    from kvideo.decode.nvdec_probe import nvdec_missing

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return nvdec_missing()


def decoders(smoke: bool) -> tuple[Callable[[], Any], torch.device]:
    """A factory of ``nvdec`` decoders (the CPU stand-in for ``smoke``) and their device."""
    from kvideo.config import DecoderConfig
    from kvideo.decode import build_decoder

    if smoke:
        from tests.helpers.nvdec_standin import cpu_nvdec

        return lambda: cpu_nvdec()[0], torch.device("cpu")
    return lambda: build_decoder(DecoderConfig(name="nvdec", device_id=0)), torch.device("cuda", 0)


def standin_for_training() -> None:
    """``--smoke``: ``video/decoder=nvdec`` builds the CPU stand-in in the training runs."""
    from kvideo.decode import nvdec_decoder
    from tests.helpers.nvdec_standin import cpu_nvdec

    def standin(device_id: int, *, num_threads: int = 1, timeout_s: float | None = 30.0) -> Any:
        return cpu_nvdec(timeout_s=timeout_s)[0]

    nvdec_decoder.make_nvdec_decoder = standin


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The keys a reader looks for first, and whether each target holds."""
    decoding = results.get("decoding", {})
    training = results.get("training", {})
    waits = {name: runs.get("nvdec", {}).get("data_wait_share") for name, runs in training.items()}
    realistic = [waits.get(name) for name in REALISTIC]
    same = decoding.get("same", {})
    return {
        "nvdec_vs_cpu_max_abs_diff": same.get("max_abs_diff"),
        "nvdec_vs_cpu_mean_abs_diff": same.get("mean_abs_diff"),
        "nvdec_clips_per_s": decoding.get("nvdec_clips_per_s"),
        "data_wait_share": waits,
        "targets": {
            "same_indices_and_times": same.get("same_indices_and_times") is True,
            "data_wait_below_5pct": all(w is not None and w < WAIT_TARGET for w in realistic),
            "nvdec_3x_cpu_workers": (decoding.get("speedup_vs_cpu_workers") or 0) >= SPEEDUP_TARGET,
            "device_memory_flat": decoding.get("memory", {}).get("flat") is True,
        },
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from benchmarks.gpu.decoding import check_decoding
    from benchmarks.gpu.processors import PROCESSOR_SECTIONS
    from benchmarks.gpu.training import check_training
    from kvideo.config import DecoderConfig
    from kvideo.decode import build_decoder

    results: dict[str, Any] = {"smoke": args.smoke, "machine": common.machine()}
    started = time.perf_counter()
    corpus = build(
        SMOKE_CORPUS if args.smoke else QUICK if args.corpus == "quick" else FULL, workers=os.cpu_count()
    )
    paths = [clip["path"] for clip in corpus["clips"]]
    workers = 2 if args.smoke else min(16, os.cpu_count() or 1)
    new_nvdec, device = decoders(args.smoke)
    cpu = build_decoder(DecoderConfig(name="pyav_cpu"))
    results["decoding"] = check_decoding(paths, new_nvdec, cpu, device, workers=workers)
    say("decoding", results["decoding"])
    if args.smoke:
        standin_for_training()
    results["training"] = check_training(Path(corpus["jsonl"]), tmp, smoke=args.smoke, workers=workers)
    say("training", results["training"])
    results["processors"] = {}
    for name, check in PROCESSOR_SECTIONS.items():
        try:
            results["processors"][name] = check(tmp)
        except ImportError as e:  # torchvision missing: this machine cannot compare
            results["processors"][name] = {"skipped": f"{type(e).__name__}: {e}"}
        except Exception as e:  # a failure is a result, and the other sections still run
            results["processors"][name] = {"pass": False, "error": f"{type(e).__name__}: {e}"}
    say("processors", results["processors"])
    results.update(headline(results), seconds=time.perf_counter() - started)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="folder for gpu.json")
    parser.add_argument("--smoke", action="store_true", help="the same code paths on CPU (CI)")
    parser.add_argument("--corpus", choices=("full", "quick"), default="full", help="benchmark corpus")
    args = parser.parse_args(argv)
    if not args.smoke and (why := nvdec_unusable()):
        print(f"gpu_check: NVDEC cannot be used on this machine: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kvideo_gpu_check_") as tmp:
        results = run(args, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({"targets": results["targets"]}))
    errors = [run for runs in results["training"].values() for run in runs.values() if "error" in run]
    failed = [r for r in results["processors"].values() if r.get("pass") is False]
    if args.smoke:  # on CPU the targets cannot hold; every code path must still have run
        return 1 if errors or failed else 0
    return 1 if errors or failed or not all(results["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
