"""The prepared GPU check (``benchmarks/gpu_check.py``) on CPU: ``--smoke`` runs every section's
code with a CPU frame reader in NVDEC's place and writes ``gpu.json``'s keys; the comparisons tell
shifted frames and pixels apart; ``make gpu-carry``'s trim keeps a wheel pip installs."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.gpu.carry import DUPLICATES, trim
from benchmarks.gpu.decoding import same_frames
from benchmarks.gpu_check import headline
from kvideo.config import DecoderConfig
from kvideo.decode import build_decoder
from kvideo.decode.types import DecodedClip
from tests.helpers import videos as V
from tests.helpers.paths import REPO


@pytest.mark.slow  # trains six tiny runs
def test_the_smoke_run_goes_through_every_section_and_writes_the_headline_keys(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["smoke"] is True and result["nvdec_vs_cpu_max_abs_diff"] == 0  # the stand-in is PyAV
    assert set(result["nvdec_clips_per_s"]) == {"1", "2", "4"}
    assert set(result["data_wait_share"]) == {"default", "hf_vlm", "pretrained"}
    assert all(0 <= share <= 1 for share in result["data_wait_share"].values())
    assert result["targets"]["same_indices_and_times"] is True
    for runs in result["training"].values():
        assert {run["status"] for run in runs.values()} == {"completed"}
        assert all(run["tokens_per_s"] > 0 and run["mfu"] > 0 for run in runs.values())


class Shifted:
    """A decoder whose frames or times are off: what the comparison must catch."""

    def __init__(self, *, seconds: float = 0.0, levels: int = 0) -> None:
        self.inner = build_decoder(DecoderConfig(name="pyav_cpu"))
        self.seconds, self.levels = seconds, levels

    def decode(self, source: Any, sample: Any, **kwargs: Any) -> DecodedClip:
        clip = self.inner.decode(source, sample, **kwargs)
        frames = (clip.frames.to(torch.int16) + self.levels).clamp(0, 255).to(torch.uint8)
        return DecodedClip(frames, [t + self.seconds for t in clip.times], clip.meta)


def test_the_comparison_names_clips_whose_times_differ_and_measures_the_pixels(tmp_path: Path) -> None:
    clip = V.make_h264(tmp_path / "a.mp4", seconds=2, gop=10)
    cpu = build_decoder(DecoderConfig(name="pyav_cpu"))
    assert same_frames([clip], Shifted(), cpu)["max_abs_diff"] == 0
    late = same_frames([clip], Shifted(seconds=0.04), cpu)
    assert late["times_differ"] == ["a.mp4"] and late["same_indices_and_times"] is False
    brighter = same_frames([clip], Shifted(levels=3), cpu)
    assert brighter["same_indices_and_times"] and 0 < brighter["max_abs_diff"] <= 3


def test_the_targets_hold_only_on_the_realistic_shapes_numbers() -> None:
    def results(wait: float, speedup: float) -> dict[str, Any]:
        training = {
            name: {"nvdec": {"data_wait_share": wait}} for name in ("default", "hf_vlm", "pretrained")
        }
        training["default"]["nvdec"]["data_wait_share"] = 0.5  # not a realistic shape: not judged
        decoding = {
            "same": {"same_indices_and_times": True},
            "speedup_vs_cpu_workers": speedup,
            "memory": {"flat": True},
        }
        return {"training": training, "decoding": decoding}

    assert all(headline(results(0.04, 3.2))["targets"].values())
    assert headline(results(0.06, 3.2))["targets"]["data_wait_below_5pct"] is False
    assert headline(results(0.04, 2.9))["targets"]["nvdec_3x_cpu_workers"] is False


def test_trimming_a_wheel_keeps_a_record_that_matches_what_is_left(tmp_path: Path) -> None:
    wheel = tmp_path / "pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl"
    files = {
        "PyNvVideoCodec/__init__.py": b"x = 1\n",
        "PyNvVideoCodec/libavformat.so.63": b"elf",
        DUPLICATES[0]: b"elf",
        "samples/tutorial.ipynb": b"{}",
        "pynvvideocodec-2.2.4.data/data/external/ffmpeg/src/ffmpeg.tar.xz": b"source",
    }
    with zipfile.ZipFile(wheel, "w") as out:
        for name, data in files.items():
            out.writestr(name, data)
        out.writestr("pynvvideocodec-2.2.4.dist-info/RECORD", "stale\n")
    with zipfile.ZipFile(trim(wheel)) as kept:
        names = set(kept.namelist())
        record = kept.read("pynvvideocodec-2.2.4.dist-info/RECORD").decode().splitlines()
    assert names == {
        "PyNvVideoCodec/__init__.py",
        "PyNvVideoCodec/libavformat.so.63",
        "pynvvideocodec-2.2.4.dist-info/RECORD",
    }
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"x = 1\n").digest()).rstrip(b"=").decode()
    assert f"PyNvVideoCodec/__init__.py,sha256={digest},6" in record
    assert len(record) == 3 and record[-1] == "pynvvideocodec-2.2.4.dist-info/RECORD,,"
