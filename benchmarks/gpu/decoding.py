"""``video/decoder=nvdec`` against a CPU decoder on the benchmark corpus (``benchmarks.corpus``).

* **Same frames.** Every clip decoded at native size by both, at ``FRAMES`` evenly spaced stamps:
  the display times must be equal (so must the frame indices, which the times name one to one),
  and the pixels are compared: NVDEC's NV12 -> RGB conversion is not FFmpeg's swscale, so the
  difference is reported (max and mean absolute, 0-255), not required to be 0.
* **Throughput.** The corpus decoded as training reads it (``SIZE`` squares) by ``streams``
  threads with a decoder each (what ``decoder.streams`` runs), against the CPU decoder in one
  process per core (what ``trainer.num_workers`` workers do): clips/s of each.
* **Memory.** Device memory in use (``torch.cuda.mem_get_info``, which sees the decoder's own
  surfaces, not only torch's) at its peak, and after the first and the last of ``PASSES`` passes
  over the corpus: it must stay within 5% after warm-up.

``nvdec`` and ``cpu`` are passed in, so ``--smoke`` runs all of this on CPU with a CPU frame
reader in PyNvVideoCodec's place (``tests.helpers.nvdec_standin``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from kvideo.decode.types import ClipMeta, VideoDecoder

FRAMES = 16
SIZE = 224
STREAMS = (1, 2, 4)
PASSES = 3
MEMORY_GROWTH_LIMIT = 0.05


def evenly(meta: ClipMeta) -> list[float]:
    """``FRAMES`` stamps spread over the clip (the ``uniform`` policy's shape)."""
    return np.linspace(0.0, meta.duration, FRAMES, endpoint=False).tolist()


def same_frames(paths: list[str], nvdec: VideoDecoder, cpu: VideoDecoder) -> dict[str, Any]:
    """Times equal clip by clip, and the pixel difference over every frame."""
    worst, total, count, mismatched = 0, 0.0, 0, []
    for path in paths:
        ours, theirs = nvdec.decode(path, evenly), cpu.decode(path, evenly)
        if ours.times != theirs.times or ours.frames.shape != theirs.frames.shape:
            mismatched.append(os.path.basename(path))
            continue
        diff = (ours.frames.cpu().to(torch.int16) - theirs.frames.to(torch.int16)).abs()
        worst = max(worst, int(diff.max()))
        total += float(diff.float().sum())
        count += diff.numel()
    return {
        "clips": len(paths),
        "times_differ": mismatched,
        "same_indices_and_times": not mismatched,
        "max_abs_diff": worst,
        "mean_abs_diff": total / count if count else None,
    }


def device_memory_used(device: torch.device) -> int | None:
    """Bytes in use on ``device`` by every allocation (None off a GPU)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free)


def streamed_clips_per_s(
    paths: list[str], new_decoder: Callable[[], VideoDecoder], streams: int, device: torch.device
) -> tuple[float, int | None]:
    """Clips/s of ``streams`` threads each decoding with its own decoder, and the peak device
    memory seen (sampled after each clip)."""
    local = threading.local()
    peak: list[int] = []

    def decode(path: str) -> int:
        if not hasattr(local, "decoder"):
            local.decoder = new_decoder()
        frames = local.decoder.decode(path, evenly, size=SIZE).frames
        used = device_memory_used(device)
        if used is not None:
            peak.append(used)
        return int(frames.shape[0])

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(decode, paths))
    return len(paths) / (time.perf_counter() - start), max(peak, default=None)


def _cpu_decode(path: str) -> int:
    from kvideo.config import DecoderConfig
    from kvideo.decode import build_decoder

    decoder = build_decoder(DecoderConfig(name="pyav_cpu"))
    return int(decoder.decode(path, evenly, size=SIZE).frames.shape[0])


def cpu_workers_clips_per_s(paths: list[str], workers: int) -> float:
    """Clips/s of ``workers`` processes decoding with ``pyav_cpu`` (the DataLoader's shape)."""
    start = time.perf_counter()
    # spawn: forking a process with NVDEC sessions and CUDA threads alive can hang the child
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_cpu_decode, paths, chunksize=1)
    return len(paths) / (time.perf_counter() - start)


def memory_flatness(paths: list[str], decoder: VideoDecoder, device: torch.device) -> dict[str, Any]:
    """Device memory after the first and the last of ``PASSES`` passes over ``paths``."""
    after: list[int | None] = []
    for _ in range(PASSES):
        for path in paths:
            decoder.decode(path, evenly, size=SIZE)
        after.append(device_memory_used(device))
    first, last = after[0], after[-1]
    growth = None if first is None or last is None else (last - first) / max(first, 1)
    return {
        "after_each_pass_mib": [None if a is None else a / 2**20 for a in after],
        "growth_share": growth,
        "flat": growth is None or growth <= MEMORY_GROWTH_LIMIT,
    }


def check_decoding(
    paths: list[str],
    new_nvdec: Callable[[], VideoDecoder],
    cpu: VideoDecoder,
    device: torch.device,
    *,
    workers: int | None = None,
) -> dict[str, Any]:
    """The section's result (see the module docstring)."""
    result: dict[str, Any] = {"same": same_frames(paths, new_nvdec(), cpu)}
    rates, peaks = {}, []
    for streams in STREAMS:
        rate, peak = streamed_clips_per_s(paths, new_nvdec, streams, device)
        rates[str(streams)] = rate
        peaks.append(peak)
    cpu_rate = cpu_workers_clips_per_s(paths, workers or os.cpu_count() or 1)
    result.update(
        nvdec_clips_per_s=rates,
        cpu_workers_clips_per_s=cpu_rate,
        cpu_workers=workers or os.cpu_count(),
        speedup_vs_cpu_workers=max(rates.values()) / cpu_rate,
        peak_device_memory_mib=None if None in peaks else max(p for p in peaks if p) / 2**20,
        memory=memory_flatness(paths, new_nvdec(), device),
    )
    return result
