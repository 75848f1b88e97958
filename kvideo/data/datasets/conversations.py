"""``conversations``: LLaVA-style video conversations (instruction tuning, question answering).

``video.data_root`` is a records file (``.json`` holding a list, or ``.jsonl`` with one record per
line), read for the train split (validation then reads the same file, with a warning), or a
folder holding ``train.json[l]`` and ``validation.json[l]`` (or ``val.json[l]``). A record::

    {"id": "v_001", "video": "clips/v_001.mp4", "start": 2.0, "end": 9.5,
     "conversations": [{"from": "human", "value": "<video>\\nWhat moves?"},
                       {"from": "gpt", "value": "A red circle."}, ...]}

* ``video``: the file, relative to the records file's folder unless absolute; ``start`` / ``end``
  (seconds) optional; ``id`` optional (default ``<file name>:<record number>``).
* ``image`` (a path or a list, as LLaVA's records have it): pictures, which the models read as
  one-frame clips at time 0 (``kvideo.decode.image``). ``video`` may be a list too. Each
  ``<video>`` placeholder takes the record's next video, each ``<image>`` its next picture, so a
  record may hold several of either or both, up to ``data.max_visuals``; numbers that do not match
  are refused naming the record. A record of videos only may mark them ``<image>`` (LLaVA-Video-178K
  does), one of pictures only ``<video>``. One visual without a placeholder gets one (LLaVA's
  convention).
  ``start`` / ``end`` are for a record of one video.
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
import re
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


def read_conversations(path: str, max_samples: int = 0, max_visuals: int = 1) -> list[ClipRow]:
    """Rows of one records file, reading a JSONL file no further than the cap."""
    path = os.path.abspath(path)
    base = os.path.dirname(path)
    rows = (_row(path, base, where, record, max_visuals) for where, record in _records(path))
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


def _paths(where: str, record: dict[str, Any], key: str) -> list[str]:
    """The record's ``video`` or ``image`` entry as a list of paths (one path or a list)."""
    value = record.get(key)
    values = [] if value is None else value if isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{where}: '{key}' must be a path or a list of paths (got {value!r})")
    return values


def _bound(where: str, record: dict[str, Any], turns: tuple[Turn, ...]) -> tuple[list[str], tuple[Turn, ...]]:
    """``(the record's visuals in placeholder order, turns with one visual placeholder)``: each
    ``<video>`` takes the next of ``video``, each ``<image>`` the next of ``image``."""
    videos, images = _paths(where, record, "video"), _paths(where, record, "image")
    if not videos and not images:
        raise ValueError(f"{where}: missing 'video' or 'image' (the clip's or picture's path)")
    for picture in images:
        if not is_image(picture):
            raise ValueError(
                f"{where}: 'image' is {picture!r}, expected a picture file ({', '.join(IMAGE_SUFFIXES)})"
            )
    text = "".join(turn.text for turn in turns)
    order = re.findall(f"{re.escape(VIDEO_PLACEHOLDER)}|{re.escape(IMAGE_PLACEHOLDER)}", text)
    if not images and VIDEO_PLACEHOLDER not in order:  # LLaVA-Video's records mark a video <image>
        order = [VIDEO_PLACEHOLDER] * len(order)
    elif not videos and IMAGE_PLACEHOLDER not in order:  # and a picture marked <video>
        order = [IMAGE_PLACEHOLDER] * len(order)
    if not order and len(videos) + len(images) == 1:  # LLaVA's convention: check_turns places it
        visuals = videos + images
    else:
        for key, placeholder, paths in (
            ("video", VIDEO_PLACEHOLDER, videos),
            ("image", IMAGE_PLACEHOLDER, images),
        ):
            if order.count(placeholder) != len(paths):
                raise ValueError(
                    f"{where}: {order.count(placeholder)} {placeholder} placeholder(s) for {len(paths)} "
                    f"path(s) in '{key}'; each placeholder takes the next one, so the numbers must match"
                )
        queues = {VIDEO_PLACEHOLDER: iter(videos), IMAGE_PLACEHOLDER: iter(images)}
        visuals = [next(queues[placeholder]) for placeholder in order]
    unified = tuple(Turn(t.role, t.text.replace(IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)) for t in turns)
    return visuals, unified


def _row(path: str, base: str, place: str, record: dict[str, Any], max_visuals: int) -> ClipRow:
    where = f"conversations {path} {place}"
    visuals, turns = _bound(where, record, _turns(where, record.get("conversations")))
    if len(visuals) > max_visuals:
        raise ValueError(
            f"{where}: holds {len(visuals)} visuals; data.max_visuals is {max_visuals} "
            "(raise it to train on records with several videos or pictures)"
        )
    try:
        turns = check_turns(turns, len(visuals))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    start, end = segment_fields(record, where)
    if len(visuals) > 1 and (start is not None or end is not None):
        raise ValueError(f"{where}: 'start' / 'end' are for a record of one video ({len(visuals)} here)")
    clip_id = record.get("id")
    answer = next(turn.text for turn in reversed(turns) if turn.role == "assistant")
    return ClipRow(
        path=resolve_against(base, visuals[0]),
        caption=answer,
        start=start,
        end=end,
        clip_id=str(clip_id) if clip_id is not None else f"{os.path.basename(path)}:{place.split()[-1]}",
        turns=turns,
        more_visuals=tuple(resolve_against(base, visual) for visual in visuals[1:]),
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
    return read_conversations(records, max_samples, data.max_visuals)
