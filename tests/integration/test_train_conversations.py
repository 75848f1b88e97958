"""``video/dataset=conversations`` end to end: the real CLI trains on LLaVA-style records made
from real encoded clips, validation reports the loss and the short answers' exact match, and
``eval.py`` evaluates the run's generated answers; the Hugging Face family reads the same records
through its chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.cli import run_eval, run_module, run_train
from tests.helpers.configs import TINY_CLI_OVERRIDES, tiny_hf_config
from tests.helpers.conversations import write_conversations
from tests.helpers.pretrained_vlms import pretrained_cli_overrides

pytestmark = pytest.mark.slow  # trains a model

ANSWERS = {"red", "green", "blue", "yellow", "left", "right", "up", "down"}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_conversations(tmp_path_factory.mktemp("conversations"), n_train=12, n_val=4)


def test_cli_trains_on_conversations_and_validation_scores_the_answers(records: Path, tmp_path: Path) -> None:
    result = run_train(
        "video/dataset=conversations",
        f"video.data_root={records}",
        *TINY_CLI_OVERRIDES,
        "model.max_text_len=96",
        "model.max_seq_len=160",
        "trainer=debug",
        "trainer.val_every=4",
        "trainer.val_predictions=4",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "final.json").read_text())["status"] == "completed"
    val = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("split") == "validation"][-1]
    assert val["val_loss"] > 0 and val["val_short_answers"] == 4
    assert 0.0 <= val["val_short_exact_match"] <= 1.0
    predictions = read_jsonl(run / "predictions_val.jsonl")
    assert {p["reference"] for p in predictions} <= ANSWERS  # the last answer: the direction
    assert {p["reference"] for p in predictions} & {"left", "right", "up", "down"}

    video = read_jsonl(run / "predictions_val.jsonl")[0]["video"]
    asked = run_module("kvideo.caption", str(run), video, "--prompt", "Which way does it move?", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr[-3000:]
    answer = json.loads(asked.stdout.strip().splitlines()[-1])
    assert answer["video"] == video and isinstance(answer["caption"], str) and answer["frames"] > 0

    evaluated = run_eval(
        f"ckpt_path={run}", "max_new_tokens=8", f"hydra.run.dir={tmp_path}/eval", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["val_clips"] == 4 and report["short_answers"] == 4
    assert len(read_jsonl(tmp_path / "eval" / "predictions.jsonl")) == 4


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed_token_budget"])
def test_hf_vlm_trains_on_conversations_through_the_chat_template(
    records: Path, tiny_hf_parts: tuple[Path, Path], tmp_path: Path, packed: bool
) -> None:
    cfg = tiny_hf_config(records, *tiny_hf_parts, max_steps=4, val_every=4, val_predictions=2)
    cfg.video.dataset_type = "conversations"
    cfg.model.max_text_len = 96  # the chat-rendered conversation (about 68 tokens), then padding
    if packed:
        cfg.data.packing = True
        cfg.data.batch_tokens = 260  # about 3 clips: 16 visual tokens and the chat text each
    final = train(cfg, tmp_path / "run")
    assert final["status"] == "completed"
    val = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "validation"][-1]
    assert val["val_short_answers"] == 2
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "split" not in r]
    assert len(losses) == 4 and all(0 < loss < 20 for loss in losses)
    efficiency = [
        r["token_efficiency"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "split" not in r
    ]
    assert min(efficiency) > 0.95 if packed else max(efficiency) < 0.9


def test_validate_probes_the_clips_the_records_name(records: Path, tmp_path: Path) -> None:
    result = run_module(
        "kvideo.validate",
        "video/dataset=conversations",
        f"video.data_root={records}",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "12 files (12 rows)" in result.stdout and "12 ok" in result.stdout


def test_a_bad_record_stops_the_cli_with_one_line_naming_the_file_and_record(tmp_path: Path) -> None:
    bad = tmp_path / "chat.json"
    bad.write_text(json.dumps([{"video": "v.mp4", "conversations": [{"from": "human", "value": "hi"}]}]))
    result = run_train(
        "video/dataset=conversations", f"video.data_root={bad}", *TINY_CLI_OVERRIDES, cwd=tmp_path
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"conversations {bad} record 0: no assistant turn (nothing to learn)" in result.stderr


def several_visuals(records: Path, out: Path) -> Path:
    """``records`` rewritten so that each record holds its clip, the next record's clip and a
    picture (``data.max_visuals=3``); the questions ask about the second clip."""
    from PIL import Image

    out.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out / "still.png")
    for name in ("train.jsonl", "validation.json"):
        path = records / name
        rows = read_jsonl(path) if name.endswith(".jsonl") else json.loads(path.read_text(encoding="utf-8"))
        rewritten = []
        for row, after in zip(rows, rows[1:] + rows[:1], strict=True):
            turns = [dict(turn) for turn in after["conversations"]]
            turns[0]["value"] = "<video> then <image> then <video>\nWhat colour is the last shape?"
            videos = [str((records / row["video"]).resolve()), str((records / after["video"]).resolve())]
            rewritten.append({"video": videos, "image": str(out / "still.png"), "conversations": turns})
        (out / name).write_text(
            "".join(json.dumps(r) + "\n" for r in rewritten)
            if name.endswith(".jsonl")
            else json.dumps(rewritten)
        )
    return out


@pytest.mark.parametrize("family", ["builtin", "hf_vlm", "qwen2_5_vl", "llava_onevision"])
def test_records_of_several_videos_and_pictures_train_and_answer(
    records: Path, tiny_hf_parts: tuple[Path, Path], tiny_vlms: dict[str, Path], tmp_path: Path, family: str
) -> None:
    """Records of two clips and a picture (``data.max_visuals=3``) train and are answered: the
    builtin model through the CLI (and ``kvideo-validate`` probes every visual), ``hf_vlm`` packed,
    and through the CLI a released Qwen2.5-VL and LLaVA-OneVision (``model=pretrained``; its
    pictures cut into their ``anyres`` tiles in the data workers)."""
    corpus = several_visuals(records, tmp_path / "several")
    data = ["video/dataset=conversations", f"video.data_root={corpus}", "data.max_visuals=3"]
    if family == "hf_vlm":
        cfg = tiny_hf_config(corpus, *tiny_hf_parts, max_steps=4, val_every=4, val_predictions=2)
        cfg.video.dataset_type = "conversations"
        cfg.model.max_text_len = 96
        cfg.data.max_visuals = 3
        cfg.data.packing = True
        final = train(cfg, tmp_path / "run")
    else:
        model = (
            [*pretrained_cli_overrides(tiny_vlms[family]), "video.max_frames=4"]
            if family in tiny_vlms
            else [*TINY_CLI_OVERRIDES, "model.max_seq_len=320"]
        )
        result = run_train(
            *data,
            *model,
            "model.max_text_len=96",
            "trainer=debug",
            "trainer.val_every=4",
            "trainer.val_predictions=4",
            f"hydra.run.dir={tmp_path}/run",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        final = json.loads((tmp_path / "run" / "final.json").read_text())
    if family == "builtin":
        probed = run_module(
            "kvideo.validate", *data, *model, "--out", str(tmp_path / "validate"), cwd=tmp_path
        )
        assert probed.returncode == 0, probed.stderr[-3000:]
        assert "13 files (12 rows)" in probed.stdout  # every clip, and the picture once
    assert final["status"] == "completed" and final["skipped_total"] == 0
    val = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "validation"][-1]
    assert val["val_loss"] > 0 and val["val_short_answers"] == (2 if family == "hf_vlm" else 4)
    assert {p["reference"] for p in read_jsonl(tmp_path / "run" / "predictions_val.jsonl")} <= ANSWERS
