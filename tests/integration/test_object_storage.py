"""``video/dataset=webdataset`` with its shards in object storage, against a real S3-compatible
server (moto's, on loopback): listing and reading by byte range, training through ``train.py``
with the listing cached, an exact resume after SIGKILL, the server stopped mid-epoch (counted
skips, no crash, no hang), and bad input in one line."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from kvideo.config import config_from
from kvideo.data.datasets.listing_cache import entry_path
from kvideo.data.datasets.shard_locations import shard_files
from kvideo.data.datasets.webdataset import _open, list_shard
from kvideo.data.rows import video_source
from kvideo.model import spec
from kvideo.train import train
from tests.helpers.cli import run_train
from tests.helpers.configs import MAX_STEPS, TINY_CLI_OVERRIDES, tiny_config
from tests.helpers.preemption import assert_resumed_exactly, build_model_acting_at, train_killed_at
from tests.helpers.s3 import environment, s3_server
from tests.helpers.shards import clip_bytes, sample, write_shard, write_split_corpus


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server holding the corpus in bucket ``corpus``, its environment set in this process."""
    local = write_split_corpus(tmp_path_factory.mktemp("corpus"))
    with s3_server() as server, environment(server.env):
        yield {"server": server, "url": server.upload(local, "corpus"), "local": local}


def test_a_shard_is_listed_and_read_by_byte_range_not_downloaded(
    store: dict[str, Any], tmp_path: Path
) -> None:
    """A shard with a 4 MiB video member: listing fetches a small part of it, the rows are the
    local file's, and a sample's read returns exactly its member's bytes."""
    big = tmp_path / "big"
    video = os.urandom(4 << 20)
    write_shard(
        big / "00000.tar", [sample("a", video, "a big clip"), sample("b", clip_bytes(0), "a small clip")]
    )
    url = store["server"].upload(big, "big")
    [(shard, stamp)] = shard_files(url, "train")
    assert shard == "s3://big/00000.tar" and stamp[0] == (big / "00000.tar").stat().st_size
    with _open(shard) as tar:
        names = [info.name for info in iter(tar.next, None)]
        fetched = tar.fileobj.cache.total_requested_bytes  # type: ignore[attr-defined]
    assert names == ["a.mp4", "a.txt", "a.json", "b.mp4", "b.txt", "b.json"]
    assert fetched < (1 << 20), fetched  # headers and captions, not the 4 MiB member
    rows, warnings = list_shard(shard, stamp)
    local_rows, _ = list_shard(str(big / "00000.tar"), (stamp[0],))
    assert not warnings
    assert [(r.clip_id, r.caption, r.offset, r.size) for r in rows] == [
        (r.clip_id, r.caption, r.offset, r.size) for r in local_rows
    ]
    assert video_source(rows[0], retry_s=5).data == video  # type: ignore[union-attr]


def _cli(url: str, run_dir: Path, *extra: str, env: dict[str, str]) -> Any:
    return run_train(
        "video/dataset=webdataset",
        f"video.data_root={url}",
        *TINY_CLI_OVERRIDES,
        "trainer.max_steps=6",  # one epoch: 12 samples in batches of 2
        "trainer.val_every=6",
        "trainer.val_max_batches=1",
        "trainer.loggers=[]",
        *extra,
        f"hydra.run.dir={run_dir}",
        cwd=run_dir.parent,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_train_cli_trains_from_s3_and_a_second_run_reads_the_listing_cache(
    store: dict[str, Any], tmp_path: Path
) -> None:
    env = store["server"].env
    result = _cli(store["url"], tmp_path / "first", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((tmp_path / "first" / "final.json").read_text())
    assert final["status"] == "completed" and final["skipped"] == {"unreadable": 1}
    assert "val_loss" in final
    shards = shard_files(store["url"], "train")
    assert all(entry_path(shard, stamp).is_file() for shard, stamp in shards)

    second = _cli(store["url"], tmp_path / "second", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads((tmp_path / "second" / "final.json").read_text())
    assert again["skipped"] == final["skipped"] and again["train_loss"] == pytest.approx(final["train_loss"])


def _config(url: str, **trainer: Any) -> Any:
    cfg = tiny_config(Path("."), val_every=0, **trainer)
    cfg.video.dataset_type = cfg.video.dataset_name = "webdataset"
    cfg.video.data_root = url
    return cfg


@pytest.mark.slow
def test_a_run_from_s3_killed_mid_epoch_resumes_on_exactly_the_batches_of_an_uninterrupted_one(
    store: dict[str, Any], tmp_path: Path
) -> None:
    expected = train(config_from(OmegaConf.structured(_config(store["url"]))), tmp_path / "reference")
    run_dir = tmp_path / "run"
    train_killed_at(_config(store["url"]), run_dir, 9, env=store["server"].env)
    final = train(config_from(OmegaConf.structured(_config(store["url"], num_workers=2))), run_dir)
    assert final["status"] == "completed" and final["resumed_from"] == 3
    assert_resumed_exactly(run_dir, tmp_path / "reference", MAX_STEPS)
    assert final["skipped"] == expected["skipped"]


@pytest.mark.slow
def test_a_server_stopped_mid_epoch_costs_counted_skips_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is killed at step 3; every later read fails. Each worker waits out the retry
    budget once, then fails fast while the store is down: the run ends, its skips counted."""
    with s3_server() as server, environment(server.env):
        url = server.upload(write_split_corpus(tmp_path / "corpus"), "gone")
        monkeypatch.setattr(spec, "build_model", build_model_acting_at(5, server.stop))
        cfg = _config(url, num_workers=1)
        cfg.data.remote_retry_s = 3.0
        cfg.data.max_skip_fraction = 1.0
        started = time.monotonic()
        final = train(config_from(OmegaConf.structured(cfg)), tmp_path / "run")
    assert final["status"] == "completed" and final["step"] == MAX_STEPS
    assert final["skipped"]["unreadable"] > 12  # the samples after the stop, every later epoch
    assert time.monotonic() - started < 120


def test_bad_storage_input_is_refused_in_one_line(store: dict[str, Any], tmp_path: Path) -> None:
    env = store["server"].env
    for url, message in (
        (
            "s3://no-such-bucket/shards",
            "video.data_root='s3://no-such-bucket/shards': bucket 'no-such-bucket' does not exist",
        ),
        (
            "abfs://container/shards",
            "video.data_root='abfs://container/shards': reading abfs:// needs adlfs (pip install adlfs)",
        ),
        (
            f"{store['url']}/nothing",
            "video.data_root='s3://corpus/nothing': no train shards (looked for s3://corpus/nothing/train/*.tar",
        ),
    ):
        run_dir = tmp_path / url.split("://")[1].replace("/", "_")
        run_dir.mkdir()
        result = _cli(url, run_dir / "run", env=env)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
        assert not (run_dir / "run" / "metrics.jsonl").exists()
