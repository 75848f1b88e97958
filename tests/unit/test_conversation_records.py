"""``conversations`` records: the files and layouts it reads, the rows it makes, and the one-line
refusals that name the file and the record."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kvideo.config.data import DataConfig
from kvideo.config.video import VideoConfig
from kvideo.data.datasets.conversations import build_conversations
from kvideo.data.rows import ClipRow, Turn

QA = [{"from": "human", "value": "<video>\nWhat colour?"}, {"from": "gpt", "value": "red"}]


def rows(root: Path, split: str = "train", max_samples: int = 0) -> list[ClipRow]:
    video = VideoConfig(data_root=str(root), dataset_type="conversations")
    return build_conversations(video, DataConfig(), split=split, max_samples=max_samples)


def write(path: Path, records: Any, *, lines: bool | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if lines if lines is not None else path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def test_a_json_list_file_reads_every_record_with_paths_against_its_folder(tmp_path: Path) -> None:
    records = [
        {"id": "a", "video": "clips/a.mp4", "conversations": QA, "start": 1, "end": 3.5},
        {"video": "/abs/b.mp4", "conversations": [{"from": "user", "value": "Q"}, *QA[1:]]},
    ]
    got = rows(write(tmp_path / "data" / "chat.json", records))
    assert got[0] == ClipRow(
        path=str(tmp_path / "data" / "clips" / "a.mp4"),
        caption="red",
        start=1.0,
        end=3.5,
        clip_id="a",
        turns=(Turn("user", "<video>\nWhat colour?"), Turn("assistant", "red")),
    )
    assert got[1].path == "/abs/b.mp4" and got[1].clip_id == "chat.json:1"
    assert got[1].turns[0] == Turn("user", "<video>\nQ")  # LLaVA's placement when none is given


def test_the_caption_is_the_last_answer_and_system_turns_are_kept(tmp_path: Path) -> None:
    turns = [
        {"from": "system", "value": "Be brief."},
        *QA,
        {"from": "human", "value": "Way?"},
        {"from": "gpt", "value": "up"},
    ]
    (row,) = rows(write(tmp_path / "c.jsonl", [{"video": "v.mp4", "conversations": turns}]))
    assert row.caption == "up" and [t.role for t in row.turns] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_a_folder_reads_train_and_validation_or_val_files(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", [{"video": "t.mp4", "conversations": QA}] * 3)
    write(tmp_path / "val.json", [{"video": "v.mp4", "conversations": QA}])
    assert len(rows(tmp_path)) == 3 and len(rows(tmp_path, max_samples=2)) == 2
    assert [r.path for r in rows(tmp_path, "validation")] == [str(tmp_path / "v.mp4")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.json", {"video": "v.mp4"}, "expected a JSON list of records, found a dict"),
        ("a.json", [{"conversations": QA}], "record 0: missing 'video'"),
        (
            "a.jsonl",
            [{"video": "v.mp4", "conversations": QA}, {"video": "w.mp4", "conversations": QA[:1]}],
            "line 2: no assistant turn",
        ),
        (
            "a.json",
            [{"video": "v.mp4", "conversations": [{"from": "bot", "value": "x"}]}],
            "record 0: turn 0 'from' is 'bot'",
        ),
        (
            "a.json",
            [{"video": "v.mp4", "conversations": []}],
            "record 0: 'conversations' must be a non-empty list",
        ),
        (
            "a.json",
            [{"video": "v.mp4", "conversations": QA, "start": 3, "end": 1}],
            "start \\(3.0\\) must be < end",
        ),
    ],
)
def test_a_bad_record_refuses_the_run_naming_the_file_and_the_record(
    tmp_path: Path, name: str, content: Any, message: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=f"conversations {path}.*{message}"):
        rows(path)


def test_files_and_folders_that_hold_no_records_say_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=re.escape("looked for validation.jsonl, validation.json, val.jsonl, val.json"),
    ):
        rows(tmp_path, "validation")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=re.escape("a conversations file must be .jsonl or .json")):
        rows(tmp_path / "notes.txt")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match=re.escape("bad.json: invalid JSON at line 1")):
        rows(tmp_path / "bad.json")
