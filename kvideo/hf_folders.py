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
import math
import os
from collections.abc import Iterator
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
    for key, values in (("image_mean", mean), ("image_std", std)):
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"{field}: {file}'s {key} must be 3 finite numbers (got {values!r:.80})")
    if min(std) <= 0:
        # Pixels are divided by it: 0 gives inf, and the run fails at its first NaN loss.
        raise ValueError(f"{field}: {file}'s image_std must be positive (got {std!r})")
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
    return sum(count for name, count in _safetensors_shapes(folder) if name.startswith(prefix))


# safetensors' own bound on a header (its MAX_HEADER_SIZE).
SAFETENSORS_MAX_HEADER = 100_000_000


def _safetensors_shapes(folder: Path) -> Iterator[tuple[str, int]]:
    """``(tensor name, element count)`` of every tensor in the folder's safetensors headers."""
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                length = os.fstat(f.fileno()).st_size
                if size > min(SAFETENSORS_MAX_HEADER, length - 8):  # read before it is allocated
                    raise ValueError(
                        f"{file}: not a safetensors file: its header claims {size:,} bytes of a "
                        f"{length:,}-byte file"
                    )
                header = json.loads(f.read(size))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):  # counted as none (a lower bound)
            continue
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            count = 1
            for dim in entry.get("shape", []):
                count *= int(dim)
            yield name, count


def tower_parameter_prefix(folder: Path) -> str:
    """A two-tower folder (CLIP, SigLIP) stores the vision tower under ``vision_model.``."""
    config = _read_json("model.vision_path", folder / CONFIG_FILE)
    return "vision_model." if isinstance(config.get("vision_config"), dict) else ""


# Released VLMs ``model=pretrained`` finetunes (``model_type`` in their config.json), and the
# ones transformers also ships whose video route kvideo does not feed yet (named in the refusal).
VIDEO_VLM_TYPES = (
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "llava_onevision",
    "llava_next_video",
    "smolvlm",
    "internvl",
)
NOT_YET_VIDEO_VLM_TYPES = ("molmo2",)
# What each family's chat template renders a video content item as: where its processor puts the
# video (Qwen's markers come with it; kvideo's video block writes them again).
QWEN_VIDEO_ITEM = "<|vision_start|><|video_pad|><|vision_end|>"


@dataclass(frozen=True)
class VideoVlmGeometry:
    """What compose time knows of a released video VLM from its ``config.json``.

    Qwen's layout: any frame size whose sides are multiples of ``factor``, patches of
    ``patch_size`` over ``temporal_patch_size`` frames, merged ``merge_size`` x ``merge_size``
    into one LM token. LLaVA-OneVision's: frames of exactly ``image_size``, each patch grid pooled
    2 x 2 (``tokens_per_frame``), one newline token after the clip. LLaVA-NeXT-Video's: the same
    with ``merge_size`` x ``merge_size`` average pooling (its ``spatial_pool_stride``) and no
    newline. SmolVLM2's and InternVL3's: frames of exactly
    ``image_size``, each one image whose patch grid is pixel-shuffled ``merge_size`` x
    ``merge_size`` (its ``scale_factor``), after its time as text.
    """

    model_type: str
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    context: int
    image_size: int = 0  # 0: any size on the factor grid (Qwen); else the one frame size

    @property
    def tokens_per_frame(self) -> int:
        """The LM tokens of one frame of a fixed size: LLaVA-OneVision's patch grid pooled 2 x 2
        (bilinear, rounding up), LLaVA-NeXT-Video's average-pooled ``merge_size`` x
        ``merge_size`` (rounding down), SmolVLM2's and InternVL3's pixel-shuffled
        ``merge_size`` x ``merge_size``."""
        grid = self.image_size // self.patch_size
        if self.model_type in ("smolvlm", "llava_next_video", "internvl"):
            return (grid // self.merge_size) ** 2
        side = -(-grid // 2)
        return side * side

    @property
    def tokens_after_clip(self) -> int:
        """LLaVA-OneVision's one newline token after each clip's frames."""
        return 1 if self.model_type == "llava_onevision" else 0

    @property
    def video_item(self) -> str:
        """What the family's chat template renders a video content item as."""
        return QWEN_VIDEO_ITEM if self.model_type.startswith("qwen") else "<video>"

    @property
    def frames_as_images(self) -> bool:
        """SmolVLM2 and InternVL3: each frame is an image in text (``kvideo.model.video_text``):
        SmolVLM2's after ``Frame from mm:ss:``, the clip introduced by its frame count and length;
        InternVL3's after ``FrameN:``."""
        return self.model_type in ("smolvlm", "internvl")

    @property
    def factor(self) -> int:
        """What frame sides must be multiples of: one merged token's side in pixels."""
        return self.patch_size * self.merge_size

    @property
    def timestamps_as_text(self) -> bool:
        """Qwen3-VL: each temporal patch follows its time as text (``<1.2 seconds>``)."""
        return self.model_type == "qwen3_vl"


def video_vlm_geometry(field: str, folder: Path) -> VideoVlmGeometry:
    """The geometry of the VLM in ``folder``, or a ``ValueError`` naming ``field`` when the folder
    is a text-only LM or a model type ``model=pretrained`` does not take."""
    file = folder / CONFIG_FILE
    config = _read_json(field, file)
    model_type = str(config.get("model_type", ""))
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise ValueError(
            f"{field}: {folder} holds a {model_type or 'model'} without a vision_config (a text-only LM?); "
            "model=hf_vlm joins a vision tower to an LM (model.vision_path, model.lm_path)"
        )
    if model_type not in VIDEO_VLM_TYPES:
        later = " (its video route is not fed by kvideo yet)" if model_type in NOT_YET_VIDEO_VLM_TYPES else ""
        raise ValueError(
            f"{field}: {folder} is a {model_type!r} model{later}; model=pretrained finetunes "
            f"{list(VIDEO_VLM_TYPES)}"
        )
    if model_type in ("smolvlm", "internvl"):
        # SmolVLM's scale_factor merges s x s patches; InternVL's downsample_ratio is 1 / s
        if model_type == "smolvlm":
            merge = int(config.get("scale_factor") or 2)
        else:
            merge = round(1 / float(config.get("downsample_ratio") or 0.5))
        return VideoVlmGeometry(
            model_type=model_type,
            patch_size=_first_int(vision, ("patch_size",), field, file),
            merge_size=merge,  # the config classes' defaults
            temporal_patch_size=1,
            context=lm_context_length(field, folder),
            image_size=_first_int(vision, ("image_size",), field, file),
        )
    if model_type in ("llava_onevision", "llava_next_video"):
        return VideoVlmGeometry(
            model_type=model_type,
            patch_size=_first_int(vision, ("patch_size",), field, file),
            merge_size=int(config.get("spatial_pool_stride") or 2) if model_type == "llava_next_video" else 1,
            temporal_patch_size=1,
            context=lm_context_length(field, folder),
            image_size=_first_int(vision, ("image_size",), field, file),
        )
    return VideoVlmGeometry(
        model_type=model_type,
        patch_size=_first_int(vision, ("patch_size",), field, file),
        merge_size=_first_int(vision, ("spatial_merge_size",), field, file),
        temporal_patch_size=_first_int(vision, ("temporal_patch_size",), field, file),
        context=lm_context_length(field, folder),
    )


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def pickled_weights_only(folder: Path) -> list[str]:
    """The folder's pickled weight files when it has no ``*.safetensors`` (empty otherwise):
    loading those runs the unpickler, which can execute code from the file."""
    if any(folder.glob("*.safetensors")):
        return []
    return sorted(p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern))


# Module names that hold each part of a released VLM, by family: ``model.freeze=[vision]`` and
# ``model.<part>_lr`` mean the same thing for every model. Checked in this order, so Qwen's
# merger (inside ``visual``) is the projector; what matches none is the LM (its embeddings and
# head included).
VLM_PART_MODULES = {
    "projector": (
        "merger",
        "deepstack_merger_list",
        "multi_modal_projector",
        "connector",
        "image_newline",
        "vision_resampler",
    ),
    "vision": ("visual", "vision_tower", "vision_model"),
}


def vlm_part_of(name: str) -> str:
    """The part (``vision``, ``projector``, ``lm``) a released VLM's parameter or module name
    belongs to, in the model or in its checkpoint files."""
    components = set(name.split("."))
    for part, modules in VLM_PART_MODULES.items():
        if components.intersection(modules):
            return part
    return "lm"


def parameter_counts_by_part(folder: Path) -> dict[str, int]:
    """Parameters of a released VLM's ``*.safetensors`` files per part (``vlm_part_of``), from the
    files' JSON headers alone."""
    counts = {"vision": 0, "projector": 0, "lm": 0}
    for name, count in _safetensors_shapes(folder):
        counts[vlm_part_of(name)] += count
    return counts
