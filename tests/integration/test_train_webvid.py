"""``python train.py video/dataset=webvid`` on WebVid as the official download leaves it: a short
real run over the downloader's partition folders (train) and the val metadata file, where rows
whose video was never downloaded are left out and counted once as ``missing`` and the run
completes; and a folder without metadata fails in one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvideo.train.metrics import read_jsonl
from tests.helpers import webvid as W
from tests.helpers.cli import run_train
from tests.helpers.configs import TINY_CLI_OVERRIDES

pytestmark = pytest.mark.slow  # trains a model

TRAIN, VAL = 8, 3
BATCH = 2  # TINY_CLI_OVERRIDES' trainer.batch_size
STEPS = 2 * (TRAIN - 1) // BATCH  # two epochs of the 7 rows downloaded (3 batches each)


def test_cli_trains_on_an_official_webvid_download_leaving_out_videos_never_downloaded(
    tmp_path: Path,
) -> None:
    root = tmp_path / "webvid"
    train_missing, val_missing = W.webvid_rows("train", TRAIN)[5], W.webvid_rows("validation", VAL)[1]
    W.write_official_webvid(
        root, train=TRAIN, val=VAL, train_partitions=3, missing={train_missing.videoid, val_missing.videoid}
    )
    run_dir = tmp_path / "run"
    result = run_train(
        "video/dataset=webvid",
        f"video.data_root={root}",
        *TINY_CLI_OVERRIDES,
        f"trainer.max_steps={STEPS}",
        f"trainer.val_every={STEPS}",
        "trainer.log_every=1",
        "trainer.ckpt_every=0",
        "trainer.val_predictions=0",
        "trainer.export_at_end=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "completed" and final["step"] == STEPS
    # Left out at listing and counted once; nothing skipped while training (no slot wasted).
    assert final["left_out"] == {"missing": 1}
    assert final["skipped"] == {} and final["skipped_total"] == 0
    assert "the dataset listing left out 1 missing rows" in result.stdout + result.stderr
    assert not (run_dir / "skipped.jsonl").exists() or read_jsonl(run_dir / "skipped.jsonl") == []
    train_lines = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r]
    assert [r["step"] for r in train_lines] == list(range(1, STEPS + 1))
    assert all(r["skipped"] == {} for r in train_lines)
    # Validation read results_2M_val.csv: the two clips downloaded, the third left out.
    assert (final["val_clips"], final["val_skipped"]) == (VAL - 1, 0)


def test_cli_a_webvid_folder_without_metadata_fails_in_one_line_naming_every_glob(tmp_path: Path) -> None:
    root = tmp_path / "webvid"
    (root / "videos").mkdir(parents=True)
    result = run_train(
        "video/dataset=webvid",
        f"video.data_root={root}",
        "trainer=debug",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"kvideo: webvid: no train metadata CSV in video.data_root='{root}': looked for "
        f"{root}/results_*_train_*/*.csv, {root}/results_*_train.csv, "
        f"{root}/raw/webvid-10M/data/train/partitions/*.csv (HYDRA_FULL_ERROR=1 shows the traceback)"
    )
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()
