"""Pretrained Hugging Face folders, read at compose time without torch or transformers.

``model.vision_path`` / ``model.lm_path`` name a local model folder or a hub id that is
already in the local Hugging Face cache. Nothing here reaches the network: a hub id is looked
up with ``local_files_only=True``, so a run on a compute node without internet fails in one
line that says how to fetch the model beforehand, instead of hanging on a download.

What compose time needs from the folders is in their JSON files: the tower's image size and
patch size (the patch grid bounds ``model.tokens_per_frame`` and fixes ``video.frame_size``),
the LM's ``max_position_embeddings`` (the token budget) and the image processor's mean/std.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


def resolve_model_folder(field: str, value: str) -> Path:
    """The local folder behind ``value``: a folder holding ``config.json``, or the cached snapshot
    of a hub id. Raises ``ValueError`` naming ``field`` when it is neither."""
    path = Path(os.path.expanduser(value))
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(
                f"{field}={value!r} is not a Hugging Face model folder: expected a {CONFIG_FILE} in it "
                "(a folder written by save_pretrained, or a hub id already in the local cache)"
            )
        return path
    if path.exists():
        raise ValueError(f"{field}={value!r} is a file; expected a model folder holding {CONFIG_FILE}")
    looks_like_hub_id = value.count("/") == 1 and not value.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ValueError(f"{field}={value!r} does not exist (expected a model folder holding {CONFIG_FILE})")
    return _cached_snapshot(field, value)


@lru_cache(maxsize=32)
def _cached_snapshot(field: str, repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise ValueError(
            f"{field}={repo_id!r} is neither a local folder nor in the Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}); "
            f"kvideo never downloads at run time: fetch it beforehand where there is network "
            f"(`hf download {repo_id}`) or pass a local folder"
        ) from None
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{field}={repo_id!r}: the cached snapshot {folder} has no {CONFIG_FILE}")
    return folder


def _read_json(field: str, file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{field}: cannot read {file} ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{field}: {file} is not a JSON object")
    return data


@dataclass(frozen=True)
class TowerGeometry:
    """What compose time knows of a vision tower from its ``config.json``."""

    image_size: int
    patch_size: int
    width: int
    depth: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _vision_section(config: dict[str, Any]) -> dict[str, Any]:
    """A CLIP / SigLIP folder holds the whole two-tower model: its ``vision_config`` is the tower."""
    section = config.get("vision_config")
    return section if isinstance(section, dict) else config


def _first_int(section: dict[str, Any], keys: tuple[str, ...], field: str, file: Path) -> int:
    for key in keys:
        value = section.get(key)
        if isinstance(value, list | tuple) and value:  # (height, width): square towers only
            value = value[0]
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"{field}: {file} has no {' / '.join(keys)}; expected a vision model's config")


def tower_geometry(field: str, folder: Path) -> TowerGeometry:
    file = folder / CONFIG_FILE
    section = _vision_section(_read_json(field, file))
    return TowerGeometry(
        image_size=_first_int(section, ("image_size", "img_size"), field, file),
        patch_size=_first_int(section, ("patch_size",), field, file),
        width=_first_int(section, ("hidden_size", "embed_dim", "width"), field, file),
        depth=_first_int(section, ("num_hidden_layers", "depth", "num_layers"), field, file),
    )


def lm_context_length(field: str, folder: Path) -> int:
    """The LM's ``max_position_embeddings`` (the longest sequence its positions cover)."""
    file = folder / CONFIG_FILE
    config = _read_json(field, file)
    text_config = config.get("text_config")
    section: dict[str, Any] = text_config if isinstance(text_config, dict) else config
    return _first_int(section, ("max_position_embeddings", "n_positions", "seq_length"), field, file)


def image_statistics(field: str, folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(image_mean, image_std)`` from the tower folder's ``preprocessor_config.json``: the
    normalization the tower was trained with (SigLIP 0.5/0.5, CLIP OpenAI's, ViT ImageNet's)."""
    file = folder / PREPROCESSOR_FILE
    if not file.is_file():
        raise ValueError(
            f"{field}: {folder} has no {PREPROCESSOR_FILE}; the tower's image mean/std come from "
            "its image processor (save it with the model: processor.save_pretrained(folder))"
        )
    config = _read_json(field, file)
    mean, std = config.get("image_mean"), config.get("image_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3):
        raise ValueError(f"{field}: {file} lacks a 3-channel image_mean / image_std")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


@dataclass(frozen=True)
class LMGeometry:
    """What the memory estimate needs of the LM: the residual width and the number of blocks."""

    width: int
    depth: int


def lm_geometry(field: str, folder: Path) -> LMGeometry:
    file = folder / CONFIG_FILE
    config = _read_json(field, file)
    text_config = config.get("text_config")
    section: dict[str, Any] = text_config if isinstance(text_config, dict) else config
    return LMGeometry(
        width=_first_int(section, ("hidden_size", "n_embd", "d_model"), field, file),
        depth=_first_int(section, ("num_hidden_layers", "n_layer", "num_layers"), field, file),
    )


def parameter_count(folder: Path, *, prefix: str = "") -> int:
    """Parameters stored in the folder's ``*.safetensors`` files whose names start with
    ``prefix``, read from the files' JSON headers alone (no tensor is loaded); 0 when the
    weights are in another format (a lower bound, like every figure of the memory estimate)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
        except (OSError, ValueError):
            continue
        for name, entry in header.items():
            if name == "__metadata__" or not name.startswith(prefix) or not isinstance(entry, dict):
                continue
            count = 1
            for dim in entry.get("shape", []):
                count *= int(dim)
            total += count
    return total


def tower_parameter_prefix(folder: Path) -> str:
    """A two-tower folder (CLIP, SigLIP) stores the vision tower under ``vision_model.``."""
    config = _read_json("model.vision_path", folder / CONFIG_FILE)
    return "vision_model." if isinstance(config.get("vision_config"), dict) else ""
