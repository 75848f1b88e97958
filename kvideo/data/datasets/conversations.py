"""``conversations``: LLaVA-style video conversations (instruction tuning, question answering).

``video.data_root`` is a records file (``.json`` holding a list, or ``.jsonl`` with one record per
line), read for the train split (validation then reads the same file, with a warning), or a
folder holding ``train.json[l]`` and ``validation.json[l]`` (or ``val.json[l]``). A record::

    {"id": "v_001", "video": "clips/v_001.mp4", "start": 2.0, "end": 9.5,
     "conversations": [{"from": "human", "value": "<video>\\nWhat moves?"},
                       {"from": "gpt", "value": "A red circle."}, ...]}

* ``video``: the file, relative to the records file's folder unless absolute; ``start`` / ``end``
  (seconds) optional; ``id`` optional (default ``<file name>:<record number>``).
* ``image`` instead of ``video`` (a path, or a list of one, as LLaVA's records have it): a picture,
  which the models read as a one-frame clip at time 0 (``kvideo.decode.image``); its ``<image>``
  placeholder is the visual placeholder. A record holding both, or several pictures, is refused.
* ``conversations``: turns in order; ``from`` is ``human`` / ``user``, ``gpt`` / ``assistant``
  or ``system`` (LLaVA's and Hugging Face's names), ``value`` the text. The ``<video>``
  placeholder and the other rules are ``kvideo.data.conversation``'s; the loss is on the
  assistant turns, and the last answer is the reference generated answers are compared with.
  ``video.prompt`` is not used: the user turns are the prompts.

A bad record refuses the run, naming the file and the record (its 0-based index in a JSON list,
its line in a JSONL file): a conversation dataset is curated text, and a record without a video,
without an answer or with an unknown role is a bug to fix, not a sample to drop silently. A video
that does not decode is the usual counted skip (``missing``, ``corrupt``, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kvideo.data.conversation import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, check_turns
from kvideo.data.datasets.common import (
    check_split,
    iter_jsonl_records,
    resolve_against,
    resolve_split_file,
    segment_fields,
    take,
)
from kvideo.data.datasets.text_errors import record_file_errors
from kvideo.data.rows import ClipRow, Turn
from kvideo.decode.image import IMAGE_SUFFIXES, is_image
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

RECORD_SUFFIXES = (".jsonl", ".json")
# LLaVA's role names first, then Hugging Face's own.
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def read_conversations(path: str, max_samples: int = 0) -> list[ClipRow]:
    """Rows of one records file, reading a JSONL file no further than the cap."""
    path = os.path.abspath(path)
    base = os.path.dirname(path)
    rows = (_row(path, base, where, record) for where, record in _records(path))
    return take(rows, max_samples)


def _records(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(place, record)``: ``"line N"`` of a JSONL file, ``"record I"`` of a JSON list."""
    if path.endswith(".jsonl"):
        for line, record in iter_jsonl_records(path, where=f"conversations {path}"):
            yield f"line {line}", record
        return
    with open(path, encoding="utf-8-sig") as handle, record_file_errors(path, f"conversations {path}"):
        try:
            records = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"conversations {path}: invalid JSON at line {err.lineno} ({err.msg})") from None
    if not isinstance(records, list):
        raise ValueError(
            f"conversations {path}: expected a JSON list of records, found a {type(records).__name__} "
            "(a .jsonl file holds one record per line)"
        )
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"conversations {path} record {index}: expected a JSON object")
        yield f"record {index}", record


def _visual(where: str, base: str, record: dict[str, Any]) -> tuple[str, bool]:
    """``(path, is a picture)``: the record's ``video``, or its ``image`` (a path, or a list of
    one path, as LLaVA's records have it)."""
    video, image = record.get("video"), record.get("image")
    if video is not None and image is not None:
        raise ValueError(f"{where}: holds both 'video' and 'image'; one visual per record is supported")
    if isinstance(image, list):
        if len(image) != 1:
            raise ValueError(
                f"{where}: 'image' lists {len(image)} pictures; one visual per record is supported"
            )
        image = image[0]
    value = video if image is None else image
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"{where}: missing 'video' or 'image' (the clip's or picture's path, relative to {base})"
        )
    return value, image is not None


def _row(path: str, base: str, place: str, record: dict[str, Any]) -> ClipRow:
    where = f"conversations {path} {place}"
    video, picture = _visual(where, base, record)
    if picture and not is_image(video):
        raise ValueError(
            f"{where}: 'image' is {video!r}, expected a picture file ({', '.join(IMAGE_SUFFIXES)})"
        )
    turns = _turns(where, record.get("conversations"))
    if picture:  # the picture's placeholder is the visual one (kvideo.data.conversation)
        turns = tuple(Turn(t.role, t.text.replace(IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)) for t in turns)
    try:
        turns = check_turns(turns)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    start, end = segment_fields(record, where)
    clip_id = record.get("id")
    answer = next(turn.text for turn in reversed(turns) if turn.role == "assistant")
    return ClipRow(
        path=resolve_against(base, video),
        caption=answer,
        start=start,
        end=end,
        clip_id=str(clip_id) if clip_id is not None else f"{os.path.basename(path)}:{place.split()[-1]}",
        turns=turns,
    )


def _turns(where: str, messages: Any) -> tuple[Turn, ...]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'conversations' must be a non-empty list of {{from, value}} turns")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"{where}: turn {i} must be an object with 'from' and 'value'")
        speaker, text = message.get("from", message.get("role")), message.get("value", message.get("content"))
        if speaker not in ROLES:
            raise ValueError(f"{where}: turn {i} 'from' is {speaker!r}, expected one of {sorted(ROLES)}")
        if not isinstance(text, str):
            raise ValueError(f"{where}: turn {i} 'value' must be a string (got {text!r})")
        turns.append(Turn(ROLES[speaker], text))
    return tuple(turns)


@DATASETS.register("conversations")
def build_conversations(
    video: VideoConfig, data: DataConfig, *, split: str, max_samples: int
) -> list[ClipRow]:
    """LLaVA-style conversation records at ``video.data_root`` (see the module docstring)."""
    check_split(split)
    if not video.data_root:
        raise ValueError(
            "video.data_root must be set for dataset_type=conversations "
            "(a .json/.jsonl records file, or a folder holding train.jsonl / validation.jsonl)"
        )
    records = resolve_split_file(video.data_root, split, RECORD_SUFFIXES, kind="conversations")
    return read_conversations(records, max_samples)
