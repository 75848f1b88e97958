"""A conversation corpus made from the sample corpus's real clips: two questions per clip
(colour, direction) whose answers are one word, so exact match means something."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kvideo.data.datasets.sample.captions import parse_caption
from kvideo.data.datasets.sample.corpus import generate
from kvideo.data.datasets.webvid import read_webvid


def write_conversations(root: Path, *, n_train: int, n_val: int) -> Path:
    """``<root>/qa`` with ``train.jsonl`` and ``validation.json`` (a JSON list), videos by relative
    path; returns that folder."""
    generate(root, name="qa_clips", n_train=n_train, n_val=n_val)
    out = root / "qa"
    out.mkdir(exist_ok=True)
    for split, name in (("train", "train.jsonl"), ("validation", "validation.json")):
        records = []
        for row in read_webvid(str(root), "qa_clips", split):
            truth = parse_caption(row.caption)
            assert truth is not None
            records.append(
                {
                    "id": row.clip_id,
                    "video": os.path.relpath(row.path, out),
                    "conversations": [
                        {"from": "human", "value": "<video>\nWhat colour is the shape?"},
                        {"from": "gpt", "value": truth["color"]},
                        {"from": "human", "value": "Which way does it move?"},
                        {"from": "gpt", "value": truth["direction"]},
                    ],
                }
            )
        with open(out / name, "w", encoding="utf-8") as f:
            if name.endswith(".jsonl"):
                f.writelines(json.dumps(r) + "\n" for r in records)
            else:
                json.dump(records, f)
    return out
