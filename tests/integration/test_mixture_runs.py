"""``data.mixture`` through the commands a user runs: ``python train.py data.mixture=[...]`` with no
other dataset key trains on a sample corpus and tar shards by weight, counts each source's samples,
skips and loss, and scores each source's validation split (a weight-0 source's too); a run killed
mid-epoch resumes on exactly the samples of an uninterrupted one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from kvideo.config import config_from
from kvideo.config.data import MixtureSource
from kvideo.train import train
from kvideo.train.metrics import read_jsonl
from tests.helpers.cli import run_train
from tests.helpers.configs import MAX_STEPS, TINY_CLI_OVERRIDES, tiny_config
from tests.helpers.preemption import assert_resumed_exactly, train_killed_at
from tests.helpers.shards import sample, write_corpus, write_shard, write_split_corpus

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``shards``: 12 training samples in two shards, one of them a corrupt video, and a validation
    shard of 4; ``held_out``: a validation shard only (a weight-0 source); ``clips``: where the
    sample corpus is generated."""
    base = tmp_path_factory.mktemp("mixture")
    shards = write_split_corpus(base / "shards")
    write_corpus(base / "held_out" / "val", [3], first=200, prefix="h")
    return {"shards": shards, "held_out": base / "held_out", "clips": base / "clips"}


def mixture_override(roots: dict[str, Path]) -> str:
    sources = [
        f"{{name:clips,dataset_type:sample,data_root:'{roots['clips']}',weight:3}}",
        f"{{name:shards,dataset_type:webdataset,data_root:'{roots['shards']}',weight:1}}",
        f"{{name:held_out,dataset_type:webdataset,data_root:'{roots['held_out']}',weight:0}}",
    ]
    return f"data.mixture=[{','.join(sources)}]"


def test_train_cli_trains_on_a_weighted_mixture_and_reports_each_source(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_train(
        mixture_override(roots),
        "data.sample_train_clips=24",
        "data.sample_val_clips=4",
        *TINY_CLI_OVERRIDES,
        "trainer.max_steps=18",  # one epoch: 24 + 12 samples in batches of 2
        "trainer.val_every=18",
        "trainer.ckpt_every=18",
        "trainer.log_every=6",
        "trainer.loggers=[]",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "completed"
    sources = final["sources"]
    assert set(sources) == {"clips", "shards"}  # held_out trains nothing
    assert sources["clips"]["seen"] + sources["shards"]["seen"] == 36
    assert sources["clips"]["seen"] > 2 * sources["shards"]["seen"]  # weights 3 : 1
    assert sources["clips"]["skipped"] == 0
    # The corrupt member is the shards source's, and the run's skip count says the same.
    assert sources["shards"]["skipped"] == final["skipped_total"]
    assert all(s["loss"] is None or s["loss"] > 0 for s in sources.values())
    assert sources["clips"]["loss"] > 0
    windows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r]
    assert [r["sources"]["clips"]["seen"] + r["sources"]["shards"]["seen"] for r in windows] == [12, 24, 36]
    # Every source's validation split scored on its own, the weight-0 one's too.
    for name in ("clips", "shards", "held_out"):
        assert final[f"val_loss/{name}"] > 0, name
    assert final["val_clips"] == 4 + 4 + 3


def mixture_config(roots: dict[str, Path], **trainer: Any) -> Any:
    cfg = tiny_config(roots["clips"], val_every=0, **trainer)
    cfg.video.data_root = ""
    cfg.data.mixture = [
        MixtureSource("clips", "sample", str(roots["clips"]), 1.0),
        MixtureSource("shards", "webdataset", str(roots["shards"]), 1.0),
    ]
    return config_from(OmegaConf.structured(cfg))


def test_a_mixture_run_killed_mid_epoch_resumes_on_exactly_the_samples_of_an_uninterrupted_one(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    """SIGKILL during step 5 (checkpoint at 3), restart with 2 workers: the same losses step for
    step, and the same per-source counts as a run never interrupted."""
    expected = train(mixture_config(roots), tmp_path / "reference")
    assert expected["status"] == "completed"
    run_dir = tmp_path / "run"
    train_killed_at(mixture_config(roots), run_dir, 9)
    final = train(mixture_config(roots, num_workers=2), run_dir)
    assert final["status"] == "completed" and final["resumed_from"] == 3
    assert_resumed_exactly(run_dir, tmp_path / "reference", MAX_STEPS)
    for name in ("clips", "shards"):
        assert final["sources"][name]["seen"] == expected["sources"][name]["seen"], name
        assert final["sources"][name]["skipped"] == expected["sources"][name]["skipped"], name


def test_validate_scans_every_source_a_split_reads(roots: dict[str, Path], tmp_path: Path) -> None:
    """``kvideo-validate data.mixture=[...]``: the training sources' files for the train split;
    with ``video.split=validation`` the weight-0 source's too."""
    from tests.helpers.cli import run_module

    def scanned(out: str, *overrides: str) -> dict[str, Any]:
        args = ("--out", str(tmp_path / out), "--no-progress", "--frames", "1")
        result = run_module("kvideo.validate", mixture_override(roots), *overrides, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        summary: dict[str, Any] = json.loads((tmp_path / out / "validate_summary.json").read_text())
        return summary

    train = scanned("train", "data.sample_train_clips=24")
    assert (train["files"], train["bad"], train["dataset_type"]) == (24 + 12, 1, "mixture")
    held = scanned("val", "data.sample_val_clips=4", "video.split=validation")
    assert held["files"] == 4 + 4 + 3


def test_pictures_and_videos_train_together(roots: dict[str, Path], tmp_path: Path) -> None:
    """An image-text shard source (``.jpg`` members, as LAION's) and a folder of captioned pictures
    (``image_folder``) beside the video corpus: each picture is a one-frame clip, none is
    skipped, and each source's validation is scored."""
    import io

    import numpy as np
    from PIL import Image

    def jpeg(index: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(np.full((24, 40, 3), 40 * index % 256, dtype=np.uint8)).save(out, format="JPEG")
        return out.getvalue()

    pictures = tmp_path / "pictures"
    write_shard(
        pictures / "train" / "00000.tar",
        [sample(f"p{i}", jpeg(i), f"a grey picture {i}", ext="jpg") for i in range(8)],
    )
    write_shard(
        pictures / "val" / "00000.tar",
        [sample(f"q{i}", jpeg(i), f"a grey picture {i}", ext="jpg") for i in range(2)],
    )
    folder = tmp_path / "folder"
    for split, count in (("train", 6), ("validation", 2)):
        (folder / split).mkdir(parents=True)
        for i in range(count):
            (folder / split / f"{i}.jpg").write_bytes(jpeg(i + 1))
            (folder / split / f"{i}.txt").write_text(f"a grey picture {i + 1}")
    cfg = tiny_config(roots["clips"], val_every=0, max_steps=6, val_max_batches=0)
    cfg.video.data_root = ""
    cfg.data.mixture = [
        MixtureSource("clips", "sample", str(roots["clips"]), 1.0),
        MixtureSource("pictures", "webdataset", str(pictures), 1.0),
        MixtureSource("folder", "image_folder", str(folder), 1.0),
    ]
    final = train(config_from(OmegaConf.structured(cfg)), tmp_path / "run")
    assert final["status"] == "completed"
    assert final["sources"]["pictures"]["seen"] > 0 and final["sources"]["pictures"]["skipped"] == 0
    assert final["skipped_total"] == 0
    assert final["val_loss/pictures"] > 0 and final["val_loss/clips"] > 0 and final["val_loss/folder"] > 0
    assert final["sources"]["folder"]["seen"] > 0 and final["sources"]["folder"]["skipped"] == 0
