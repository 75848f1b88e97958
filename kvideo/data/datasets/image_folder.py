"""``image_folder``: a folder of captioned pictures, laid out as Hugging Face ``datasets``'
``imagefolder`` or as image-caption trainers keep them (a ``.txt`` beside each picture).

``video.data_root`` is a folder holding ``train/`` and ``validation/`` (or ``val/``) folders, or
the pictures themselves (read for every split; validation then reads the training pictures, with a
warning). In a split's folder the captions come from:

* ``metadata.jsonl`` when there is one (``imagefolder``'s): one record per picture, ``file_name``
  relative to that folder and its caption under ``caption`` or ``text``; a bad record refuses the
  run naming the file and line, as a manifest's does;
* otherwise each picture's ``<stem>.txt``: the pictures (``kvideo.decode.image.IMAGE_SUFFIXES``,
  every subfolder, in path order), a picture without a caption (no ``.txt``, or an empty one)
  counted as a ``no_caption`` skip, as a shard sample without one is.

Each picture is a one-frame clip at time 0 (``kvideo.decode.image``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kvideo.data.datasets.common import absolute_root, check_split, iter_jsonl_records, resolve_against, take
from kvideo.data.rows import ClipRow
from kvideo.decode.image import is_image
from kvideo.registry import DATASETS

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.video import VideoConfig

logger = logging.getLogger(__name__)

METADATA = "metadata.jsonl"
CAPTION_KEYS = ("caption", "text")


def split_folder(data_root: str, split: str) -> str:
    """The folder ``split`` reads (see the module docstring)."""
    root = absolute_root(data_root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"video.data_root={data_root!r}: no such folder of pictures")
    stems = ("validation", "val") if split == "validation" else (split,)
    for stem in stems:
        if os.path.isdir(os.path.join(root, stem)):
            return os.path.join(root, stem)
    if any(os.path.isdir(os.path.join(root, stem)) for stem in ("train", "validation", "val")):
        raise FileNotFoundError(f"video.data_root={data_root!r} has no {'/'.join(stems)} folder for {split}")
    if split == "validation":
        logger.warning(
            "image_folder: validation reads the training pictures in %s (give the folder train/ and "
            "validation/ folders for a held-out set)",
            root,
        )
    return root


def metadata_rows(folder: str) -> Iterator[ClipRow]:
    """Rows of ``folder``'s ``metadata.jsonl``, in its order."""
    path = os.path.join(folder, METADATA)
    for line, record in iter_jsonl_records(path, where=f"image_folder {path}"):
        where = f"image_folder {path} line {line}"
        name = record.get("file_name")
        if not isinstance(name, str) or not is_image(name):
            raise ValueError(f"{where}: 'file_name' must name a picture (got {name!r})")
        caption = next((record[key] for key in CAPTION_KEYS if key in record), None)
        if not isinstance(caption, str):
            raise ValueError(f"{where}: expected the caption under {' or '.join(map(repr, CAPTION_KEYS))}")
        yield ClipRow(path=resolve_against(folder, name), caption=caption, clip_id=name)


def sidecar_rows(folder: str) -> Iterator[ClipRow]:
    """A row per picture under ``folder`` (path order), its caption its ``<stem>.txt``."""
    for here, folders, files in os.walk(folder):
        folders.sort()
        for name in sorted(files):
            if not is_image(name):
                continue
            path = os.path.join(here, name)
            caption = ""
            try:
                with open(os.path.splitext(path)[0] + ".txt", encoding="utf-8") as handle:
                    caption = handle.read().strip()
            except (FileNotFoundError, UnicodeDecodeError):
                pass
            clip_id = os.path.relpath(path, folder)
            yield ClipRow(
                path=path, caption=caption, clip_id=clip_id, skip_reason="" if caption else "no_caption"
            )


@DATASETS.register("image_folder")
def build_image_folder(
    video: VideoConfig, data: DataConfig, *, split: str, max_samples: int
) -> list[ClipRow]:
    """Captioned pictures at ``video.data_root`` (see the module docstring)."""
    check_split(split)
    if not video.data_root:
        raise ValueError(
            "video.data_root must be set for dataset_type=image_folder (a folder of pictures with "
            "metadata.jsonl or a .txt caption each, or one holding train/ and validation/)"
        )
    folder = split_folder(video.data_root, split)
    has_metadata = os.path.isfile(os.path.join(folder, METADATA))
    return take(metadata_rows(folder) if has_metadata else sidecar_rows(folder), max_samples)
