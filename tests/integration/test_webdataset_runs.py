"""``video/dataset=webdataset`` through the commands a user runs: ``python train.py`` on shards
(with a broken member counted, and an exact resume after SIGKILL), ``python -m kvideo.validate``
on shards (its blocklist masks the members it names), and bad shard input refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from kvideo.config import config_from
from kvideo.data.loader import build_dataset
from kvideo.data.settings import ClipSettings
from kvideo.data.tokenizer import ByteTokenizer
from kvideo.train import train
from kvideo.train.metrics import read_jsonl
from tests.helpers.cli import run_module, run_train
from tests.helpers.configs import MAX_STEPS, TINY_CLI_OVERRIDES, tiny_config
from tests.helpers.paths import REPO
from tests.helpers.shards import BROKEN, clip_bytes, sample, write_corpus, write_shard

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``train/``: two good shards of unequal size and one holding a corrupt video, a sample
    without its caption and one without its video (24 samples); ``val/``: one shard of 4."""
    root = tmp_path_factory.mktemp("webdataset")
    write_corpus(root / "train", [9, 6])
    good = clip_bytes(0)
    broken = [
        sample("b0", good, "clip b0"),
        sample("b1", BROKEN, "a failed download"),
        sample("b2", good, "clip b2"),
        sample("b3", good, None),
        sample("b4", good, "clip b4"),
        sample("b5", None, "a caption without its video"),
        sample("b6", good, "clip b6"),
        sample("b7", good, "clip b7"),
        sample("b8", good, "clip b8"),
    ]
    third = write_shard(root / "train" / "00002.tar", broken)
    write_corpus(root / "val", [4], first=100, prefix="v")
    bad = {f"{third}#b1.mp4": "unreadable", f"{third}#b3.mp4": "no_caption", f"{third}#b5": "missing"}
    return {"root": root, "bad": bad}


def webdataset_config(root: Path, **trainer: Any) -> Any:
    """The tiny training config of ``tests.helpers.configs`` on the shards."""
    cfg = tiny_config(root, **trainer)
    cfg.video.dataset_type = cfg.video.dataset_name = "webdataset"
    return config_from(OmegaConf.structured(cfg))


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r}


# ----------------------------------------------------------------------------- train.py


def test_train_cli_trains_on_shards_and_counts_the_broken_members(
    shards: dict[str, Any], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_train(
        "video/dataset=webdataset",
        f"video.data_root={shards['root']}",
        *TINY_CLI_OVERRIDES,
        "trainer.max_steps=12",  # one epoch: 24 samples in batches of 2
        "trainer.val_every=12",
        "trainer.val_max_batches=1",
        "trainer.ckpt_every=12",
        "trainer.loggers=[]",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "completed" and final["step"] == 12
    assert final["skipped"] == {"missing": 1, "no_caption": 1, "unreadable": 1}
    skipped = {r["path"]: r["reason"] for r in read_jsonl(run_dir / "skipped.jsonl")}
    assert skipped == shards["bad"]
    assert "val_loss" in final


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from omegaconf import OmegaConf
    import kvideo.model.spec as spec
    from kvideo.config import config_from
    from kvideo.train import train

    cfg_path, run_dir, at_forward = sys.argv[1], sys.argv[2], int(sys.argv[3])
    build = spec.build_model
    calls = [0]

    def hook(module, args):
        if module.training:
            calls[0] += 1
            if calls[0] == at_forward:
                os.kill(os.getpid(), signal.SIGKILL)  # in the middle of a step, no clean-up

    def build_model(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    spec.build_model = build_model
    train(config_from(OmegaConf.load(cfg_path)), run_dir)
    """
)


def test_a_run_killed_mid_epoch_resumes_on_exactly_the_batches_of_an_uninterrupted_one(
    shards: dict[str, Any], tmp_path: Path
) -> None:
    """SIGKILL during step 5 (checkpoint at 3), restart with 2 workers instead of none: the same
    shard samples in the same batches, so the same losses as a run never interrupted."""
    reference = tmp_path / "reference"
    expected = train(webdataset_config(shards["root"], val_every=0), reference)
    assert expected["status"] == "completed"

    cfg = webdataset_config(shards["root"], val_every=0)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cfg_path), str(run_dir), "9"],  # step 5 at grad_accum 2
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert max(_train_losses(run_dir)) == 4

    final = train(webdataset_config(shards["root"], val_every=0, num_workers=2), run_dir)
    assert final["status"] == "completed" and final["resumed_from"] == 3
    got, want = _train_losses(run_dir), _train_losses(reference)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, abs=1e-5), step
    assert final["skipped"] == expected["skipped"]


# ----------------------------------------------------------------------------- kvideo.validate


def test_validate_probes_every_shard_sample_and_its_blocklist_masks_the_bad_ones(
    shards: dict[str, Any], tmp_path: Path
) -> None:
    """Scanned through a brace pattern (quoted for Hydra) of the train shards; trained from the
    folder: the same shard member names either way."""
    out = tmp_path / "report"
    result = run_module(
        "kvideo.validate",
        "video/dataset=webdataset",
        f"video.data_root='{shards['root']}/train/{{00000..00002}}.tar'",
        "--size",
        "32",
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "24 files (24 rows)" in result.stdout
    assert "21 ok, 3 bad (missing 1, no_caption 1, unreadable 1)" in result.stdout
    records = [json.loads(line) for line in (out / "validate_report.jsonl").read_text().splitlines()]
    assert {r["path"]: r["reason"] for r in records if not r["ok"]} == shards["bad"]
    assert all(r["codec"] == "h264" and r["width"] == 48 for r in records if r["ok"])

    # The blocklist names shard members; training skips exactly those, unopened.
    blocklist = out / "blocklist.txt"
    cfg = webdataset_config(shards["root"])
    cfg.data.blocklist = str(blocklist)
    dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=ByteTokenizer())
    listed = {i for i, row in enumerate(dataset.rows) if row.path in shards["bad"]}
    assert len(listed) == 3
    for i in range(len(dataset)):
        assert dataset[i]["skip_reason"] == ("blocklisted" if i in listed else "")


# ----------------------------------------------------------------------------- bad input


def _not_a_tar(root: Path) -> tuple[str, str]:
    write_corpus(root / "train", [1])
    bad = root / "train" / "00001.tar"
    bad.write_bytes(b"PK\x03\x04 a zip file " * 64)
    return str(root), f"webdataset shard {bad} is not a tar archive"


def _no_shards(root: Path) -> tuple[str, str]:
    root.mkdir()
    return str(
        root
    ), f"video.data_root='{root}': no train shards (looked for {root}/train/*.tar, {root}/*.tar)"


def _empty_pattern(root: Path) -> tuple[str, str]:
    pattern = f"{root}/{{00000..00009}}.tar"
    message = f"video.data_root='{pattern}': the pattern expands to 10 paths and none is a shard file"
    return f"'{pattern}'", message  # quoted: Hydra's override grammar reserves braces


@pytest.mark.parametrize("case", [_not_a_tar, _no_shards, _empty_pattern], ids=lambda c: c.__name__[1:])
def test_bad_shard_input_is_refused_in_one_line_by_train_and_validate(case: Any, tmp_path: Path) -> None:
    data_root, message = case(tmp_path / "data")
    result = run_train(
        "video/dataset=webdataset",
        f"video.data_root={data_root}",
        "trainer=debug",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kvideo: ") and message in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    scan = run_module(
        "kvideo.validate", "video/dataset=webdataset", f"video.data_root={data_root}", cwd=tmp_path
    )
    line = scan.stderr.strip()
    assert scan.returncode == 2 and "\n" not in line
    assert line.startswith(f"kvideo.validate: cannot read the dataset: {message}"), line
