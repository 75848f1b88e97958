"""``video/decoder=nvdec`` without a GPU: the refusal on a machine without NVDEC, the display index
it decodes by (PyAV's frame table), its recovery with a fresh decoder, and the in-process
prefetch path with several decode streams, a CPU frame reader in PyNvVideoCodec's place
(``tests.helpers.nvdec_standin``). The decoder contract itself runs in ``test_decode.py``."""

from __future__ import annotations

import ctypes
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kvideo.config import DecoderConfig
from kvideo.data import clip_dataset, loader
from kvideo.data.loader import build_dataset, build_loader
from kvideo.data.settings import ClipSettings
from kvideo.data.tokenizer import ByteTokenizer
from kvideo.decode import build_decoder
from kvideo.decode.display_index import display_index
from kvideo.decode.errors import DecodeError
from kvideo.decode.nvdec_probe import nvdec_missing
from kvideo.decode.pyav_decoder import demux, open_video
from tests.helpers import videos as V
from tests.helpers.cli import run_train
from tests.helpers.nvdec_standin import PyAVFrames, cpu_nvdec
from tests.unit.test_loader import CPU, make_cfg

NO_NVDEC = nvdec_missing() is not None


def everything(meta: Any) -> list[float]:
    return np.linspace(0.0, meta.duration, 6).tolist()


@pytest.mark.skipif(not NO_NVDEC, reason="this machine can decode with NVDEC")
def test_without_the_drivers_libraries_nvdec_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        RuntimeError, match=r"^video/decoder=nvdec cannot run on this machine: .*libnvcuvid\.so\.1"
    ):
        build_decoder(DecoderConfig(name="nvdec"))
    real = ctypes.CDLL

    def encode_missing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "libnvidia-encode.so.1":
            raise OSError(name)
        return object() if name == "libnvcuvid.so.1" else real(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", encode_missing)
    assert "libnvidia-encode.so.1" in str(nvdec_missing()) and "video" in str(nvdec_missing())
    monkeypatch.setattr(ctypes, "CDLL", lambda *_a, **_k: object())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert nvdec_missing() == "PyNvVideoCodec is not installed (pip install 'kvideo[gpu]')"


@pytest.mark.skipif(not NO_NVDEC, reason="this machine can decode with NVDEC")
def test_a_run_with_nvdec_on_a_machine_without_it_stops_before_any_work(tmp_path: Path) -> None:
    result = run_train("video/decoder=nvdec", "trainer=debug", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("kvideo:")]
    assert len(lines) == 1 and "libnvcuvid.so.1" in lines[0] and "video/decoder=pyav_cpu" in lines[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "checkpoints").exists()


def test_the_display_index_is_pyavs_frame_table_and_counts_an_edit_lists_preroll(tmp_path: Path) -> None:
    plain = V.make_vfr(tmp_path / "vfr.mp4")
    cut = V.make_stream_copy_cut(
        V.make_h264(tmp_path / "six.mp4", seconds=6, gop=50, bframes=True), tmp_path / "cut.mp4", cut=1.32
    )
    for path, preroll in ((plain, 0), (cut, 33)):
        index = display_index(path)
        container = open_video(path)
        try:
            expected = demux(container, path).timeline
        finally:
            container.close()
        assert np.array_equal(index.timeline.starts, expected.starts) and index.preroll == preroll
        assert (index.width, index.height) == (64, 48)


def test_a_failed_decode_is_retried_on_a_fresh_decoder_and_a_broken_file_poisons_nothing(
    tmp_path: Path,
) -> None:
    good = V.make_h264(tmp_path / "good.mp4", seconds=2, gop=10)
    decoder, readers = cpu_nvdec(fail=1)
    clip = decoder.decode(good, everything)
    reference, _ = V.pyav_at(good, everything(clip.meta))
    assert np.array_equal(clip.frames.numpy(), reference)
    assert len(readers.built) == 2 and readers.built[0].calls == 1  # the broken session was dropped
    with pytest.raises(DecodeError) as bad:
        decoder.decode(V.make_text_as_video(tmp_path / "text.mp4"), everything)
    assert bad.value.reason == "unreadable"
    again = decoder.decode(good, everything)
    assert np.array_equal(again.frames.numpy(), clip.frames.numpy())


def test_a_decode_past_its_deadline_leaves_the_next_one_a_fresh_decoder(tmp_path: Path) -> None:
    good = V.make_h264(tmp_path / "good.mp4", seconds=1, gop=10)
    decoder, readers = cpu_nvdec(timeout_s=0.5)
    slow = threading.Event()
    real = PyAVFrames.frames

    def hangs_once(self: PyAVFrames, source: Any, indices: list[int]) -> torch.Tensor:
        if not slow.is_set():
            slow.set()
            time.sleep(2.0)
        return real(self, source, indices)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PyAVFrames, "frames", hangs_once)
        with pytest.raises(DecodeError) as late:
            decoder.decode(good, everything)
        assert late.value.reason == "timeout"
        decoder.decode(good, everything)
    assert len(readers.built) == 2


def test_a_batch_is_decoded_by_several_streams_in_the_training_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``decoder.streams=3``: a batch's clips decode on three threads, each with its own decoder,
    behind the prefetch thread; the batches equal ``pyav_cpu``'s, in order, and a reader that
    breaks once costs nothing but a fresh decoder."""
    paths = [
        V.make_h264(tmp_path / f"c{i}.mp4", seconds=1.0 + 0.5 * i, fps=10, width=48, height=32, gop=12)
        for i in range(6)
    ]
    threads: set[int] = set()

    def standin(cfg: DecoderConfig, local_rank: int = 0) -> Any:
        threads.add(threading.get_ident())
        return cpu_nvdec(fail=1)[0]

    monkeypatch.setattr(clip_dataset, "build_decoder", standin)
    monkeypatch.setattr(loader, "build_decoder", standin)

    def batches(name: str, **decoder: Any) -> list[dict[str, Any]]:
        cfg = make_cfg(
            tmp_path,
            [str(p) for p in paths],
            **{f"decoder.{k}": v for k, v in {"name": name, **decoder}.items()},
        )
        dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
        return list(build_loader(dataset, batch_size=3, device=CPU))

    streamed = batches("nvdec", streams=3, prefetch=2)
    assert len(threads) >= 3  # the start-up check's, and one per stream
    reference = batches("pyav_cpu")
    assert [b["index"].tolist() for b in streamed] == [[0, 1, 2], [3, 4, 5]]
    for ours, theirs in zip(streamed, reference, strict=True):
        assert ours["skip_reason"] == ["", "", ""]
        torch.testing.assert_close(ours["frames"], theirs["frames"])
        assert torch.equal(ours["frame_times"], theirs["frame_times"])


def test_a_shard_member_reaches_the_decoder_as_a_file_in_memory_only_while_it_decodes() -> None:
    """``SimpleDecoder`` takes a file name: a ``VideoBytes`` source is written to ``/dev/shm``
    for the decode and removed after it."""
    from kvideo.decode.nvdec_decoder import file_of
    from kvideo.decode.types import VideoBytes

    with file_of("/data/clip.mp4") as path:
        assert path == "/data/clip.mp4"
    with file_of(VideoBytes("shard.tar#k.mp4", b"\x00\x00\x00\x18ftypmp42")) as path:
        assert Path(path).read_bytes() == b"\x00\x00\x00\x18ftypmp42" and path.endswith(".mp4")
        assert path.startswith("/dev/shm/") or not Path("/dev/shm").is_dir()
    assert not Path(path).exists()
