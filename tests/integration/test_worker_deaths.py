"""A DataLoader worker that dies (``kill -9``, the OOM killer, a segfault in a decoder) does not
end the run: the workers are replaced, the epoch goes on after the delivered samples, and a
sample that kills a worker twice is skipped as ``worker_crash``.

Real DataLoader worker processes over real encoded clips; the deaths are real SIGKILLs, sent
from outside (as the OOM killer does) or by a decoder plugin on one poisoned file (as a
segfaulting decoder does).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

from kvideo.config import config_from, register_configs
from kvideo.data.settings import ClipSettings
from kvideo.registry import DECODERS
from tests.helpers import videos as V
from tests.helpers.paths import CONF_DIR

register_configs()

CLIPS = 12
POISON = "poison"


def _poisoned_decoder(cfg, *, local_rank: int = 0):
    """decord_cpu, except that decoding a path with "poison" in it kills the process."""
    from kvideo.decode.decord_decoder import make_cpu_decoder

    inner = make_cpu_decoder(num_threads=cfg.num_threads, timeout_s=cfg.timeout_s)

    class Poisoned:
        def decode(self, path, sample, **kwargs):
            if POISON in str(path):
                os.kill(os.getpid(), signal.SIGKILL)
            return inner.decode(path, sample, **kwargs)

    return Poisoned()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deaths")
    lines = []
    for i in range(CLIPS):
        name = f"{POISON}.mp4" if i == 5 else f"clip{i}.mp4"
        path = V.make_h264(root / name, seconds=0.6, fps=10, gop=5)
        lines.append(json.dumps({"path": path, "caption": f"clip {i}"}) + "\n")
    (root / "train.jsonl").write_text("".join(lines))
    return root


def _cfg(root: Path, decoder: str, workers: int):
    overrides = [
        "video/dataset=manifest",
        f"video.data_root={root}",
        f"decoder.name={decoder}",
        "video.frame_size=32",
        "video.max_frames=2",
        "video.min_frames=2",
        "model.tokens_per_frame=4",
        f"trainer.num_workers={workers}",
        "trainer.device=cpu",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return config_from(compose(config_name="config", overrides=overrides))


def _epoch(root: Path, decoder: str, workers: int, *, on_first_batch=None) -> list[dict[str, Any]]:
    from kvideo.data.loader import build_dataset, build_loader
    from kvideo.data.tokenizer import build_tokenizer

    cfg = _cfg(root, decoder, workers)
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data))
    batches = build_loader(
        ds,
        shuffle=True,
        batch_size=2,
        drop_last=False,
        device=torch.device("cpu"),
    )
    out: list[Any] = []
    for batch in batches:
        out.extend(
            {"index": int(i), "reason": r} for i, r in zip(batch["index"], batch["skip_reason"], strict=True)
        )
        if on_first_batch is not None and len(out) == 2:
            on_first_batch()
    return out


def _children() -> list[int]:
    """This process's child processes."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                found.append(int(entry))
    return found


def test_a_worker_killed_from_outside_is_replaced_and_the_order_goes_on(manifest: Path, caplog) -> None:
    expected = [s["index"] for s in _epoch(manifest, "decord_cpu", 0)]
    others = set(_children())  # helpers other tests left running (forkserver, resource tracker)

    def kill_one_worker() -> None:
        pids = sorted(set(_children()) - others)
        assert pids, "no DataLoader worker found"
        os.kill(pids[0], signal.SIGKILL)  # what the OOM killer does

    caplog.set_level("WARNING", logger="kvideo.data.watchdog")
    got = _epoch(manifest, "decord_cpu", 2, on_first_batch=kill_one_worker)
    assert [s["index"] for s in got] == expected  # every sample once, in the same order
    assert all(s["reason"] == "" for s in got)
    assert any(
        "died (SIGKILL)" in r.getMessage() and "replacing the workers" in r.getMessage()
        for r in caplog.records
    )


def test_a_sample_that_kills_its_worker_twice_is_skipped_as_worker_crash(
    manifest: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setitem(DECODERS._entries, "poisoned_cpu", _poisoned_decoder)  # forked workers inherit it
    expected = [s["index"] for s in _epoch(manifest, "decord_cpu", 0)]
    caplog.set_level("WARNING", logger="kvideo.data.watchdog")
    got = _epoch(manifest, "poisoned_cpu", 2)
    assert [s["index"] for s in got] == expected
    assert {s["index"]: s["reason"] for s in got if s["reason"]} == {5: "worker_crash"}
    deaths = [r.getMessage() for r in caplog.records if "on sample 5" in r.getMessage()]
    assert len(deaths) == 2 and "skipped as worker_crash" in deaths[1]
