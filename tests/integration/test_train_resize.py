"""``video.resize``: clips of other shapes than square, end to end. The dataset places each
picture where the rule says (``keep_aspect``: centred in the square, bars in the tower's mean
colour; ``max_pixels``: at its own size, the batch padded to its largest), the builtin model trains
with ``keep_aspect`` through the real CLI, and ``hf_vlm`` trains with ``max_pixels`` on clips of
three shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kvideo.data.loader import build_dataset, collate
from kvideo.data.settings import ClipSettings
from kvideo.data.tokenizer import build_tokenizer
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers import videos as V
from tests.helpers.cli import run_module, run_train
from tests.helpers.configs import TINY_CLI_OVERRIDES, tiny_config, tiny_hf_config

pytestmark = pytest.mark.slow  # trains a model

SHAPES = [(96, 48), (48, 96), (64, 64)]  # wide, tall, square (width, height)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest folder: train and validation clips of three shapes."""
    root = tmp_path_factory.mktemp("shapes")
    for split, count in (("train", 12), ("validation", 3)):
        lines = []
        for i in range(count):
            width, height = SHAPES[i % len(SHAPES)]
            path = V.make_h264(root / f"{split}_{i}.mp4", seconds=1.0, fps=8, width=width, height=height)
            lines.append(json.dumps({"path": Path(path).name, "caption": f"a {width}x{height} clip"}) + "\n")
        (root / f"{split}.jsonl").write_text("".join(lines))
    return root


def test_keep_aspect_centres_each_picture_in_the_square_with_mean_colour_bars(clips: Path) -> None:
    cfg = tiny_config(clips)
    cfg.video.dataset_type, cfg.video.resize, cfg.video.frame_size = "manifest", "keep_aspect", 32
    dataset = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data))
    wide, tall, square = (dataset[i] for i in range(3))
    assert wide["frame_region"].tolist() == [8, 0, 16, 32]  # 96x48 -> 32x16, centred
    assert tall["frame_region"].tolist() == [0, 8, 32, 16]
    assert square["frame_region"].tolist() == [0, 0, 32, 32]
    bar = wide["frames"][0, :8]
    assert bool((bar == dataset.pad_colour).all())  # ImageNet's mean colour (124, 116, 104)
    assert wide["frames"].shape == (4, 32, 32, 3) and not bool(
        (wide["frames"][0, 8:24] == dataset.pad_colour).all()
    )


def test_max_pixels_keeps_each_clips_shape_and_the_batch_pads_to_its_largest(
    clips: Path, tiny_hf_parts: tuple[Path, Path]
) -> None:
    cfg = tiny_hf_config(clips, *tiny_hf_parts)
    cfg.video.dataset_type, cfg.video.resize, cfg.video.max_pixels = "manifest", "max_pixels", 64 * 64
    dataset = build_dataset(
        ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data, cfg.model)
    )
    items = [dataset[i] for i in range(3)]
    # factor 32 (16 px patches pooled 2 x 2): 96x48 is 2:1 in 32 x 64 within 4096 px
    assert [item["frame_region"].tolist() for item in items] == [
        [0, 0, 32, 64],
        [0, 0, 64, 32],
        [0, 0, 64, 64],
    ]
    batch = collate(items)
    assert batch["frames"].shape == (3, 4, 64, 64, 3)
    assert bool((batch["frames"][0, :, 32:] == 0).all()) and bool((batch["frames"][1, :, :, 32:] == 0).all())


def test_cli_trains_the_builtin_model_on_keep_aspect_frames(clips: Path, tmp_path: Path) -> None:
    result = run_train(
        "video/dataset=manifest",
        f"video.data_root={clips}",
        "video.resize=keep_aspect",
        *TINY_CLI_OVERRIDES,
        "trainer=debug",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "final.json").read_text())["status"] == "completed"


def test_hf_vlm_trains_on_max_pixels_clips_of_three_shapes(
    clips: Path, tiny_hf_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg = tiny_hf_config(clips, *tiny_hf_parts, max_steps=4, val_every=4, batch_size=3)
    cfg.video.dataset_type, cfg.video.resize, cfg.video.max_pixels = "manifest", "max_pixels", 64 * 64
    final = train(cfg, tmp_path / "run")
    assert final["status"] == "completed"
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "split" not in r]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))


def test_validate_probes_at_the_resize_rule_training_uses(clips: Path, tmp_path: Path) -> None:
    result = run_module(
        "kvideo.validate",
        "video/dataset=manifest",
        f"video.data_root={clips}",
        "video.resize=keep_aspect",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "validate_summary.json").read_text())
    assert summary["ok"] == 12 and summary["size"]["mode"] == "keep_aspect"
    records = read_jsonl(tmp_path / "validate_report.jsonl")
    assert all(record["ok"] for record in records)
