"""A picture cut into the tiles a released VLM's image processor gives it (``model=pretrained``:
LLaVA-OneVision, LLaVA-NeXT-Video, SmolVLM2, InternVL3).

These families read a picture from its own size, not from the tower's square: LLaVA's processors
pick the best of the model's ``image_grid_pinpoints`` for the picture's aspect, cut it into tiles of
the tower's size and put the whole picture, squashed, first (``anyres``); SmolVLM2's cuts it into
rows and columns of tiles and puts the whole picture last; InternVL3's crops it to the grid of at
most ``max_patches`` tiles nearest its aspect, then adds a thumbnail of the whole (its processor
always crops a picture: ``crop_to_patches``). So the data workers run the model's own
image processor (``AutoImageProcessor``) on the decoded picture, with its rescaling and
normalization left to the loader (they act per pixel, as kvideo's normalization does), and the
tiles take the picture's frame slots: a visual's ``video.max_frames`` slots hold a video's frames or
a picture's tiles. The model then needs the picture's size (``picture_size``): LLaVA's
``image_sizes``, and what SmolVLM2's rows and columns follow from (``smolvlm_grid``).

The processor's own rules, and kvideo's two about slots:

* LLaVA-OneVision gives each picture of a record of several one tile, the picture padded square in
  the mean colour (its processor's multi-image rule).
* SmolVLM2 cuts a picture into at most ``k x k`` tiles and its whole, ``k * k + 1 <= max_frames``,
  by lowering its ``size['longest_edge']`` to ``k`` tiles (its processor's own knob); InternVL3
  into at most ``max_frames - 1`` tiles and the thumbnail, by lowering its ``max_patches``.
* LLaVA's tile grid is the model's (its config's pinpoints): a run whose largest grid, plus the
  whole picture, does not fit ``video.max_frames`` is refused (``check_slots``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from kvideo.decode.types import DecodedClip

# The released families whose image route tiles a picture from its own size.
TILING_TYPES = ("llava_onevision", "llava_next_video", "smolvlm", "internvl")
# SmolVLM2's image markers (its tokenizer's fake_image_token, global_image_token, image_token)
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
IMAGE_TOKEN = "<image>"


@dataclass
class PictureTiles(DecodedClip):
    """A picture as its image processor's tiles: ``frames`` (T, S, S, 3) uint8 in the processor's
    order, each at time 0, and ``picture_size``, the (height, width) it was cut from."""

    picture_size: tuple[int, int] = (0, 0)


@cache
def image_processor(folder: str) -> Any:
    """The model folder's image processor, loaded once per process (the data workers' too)."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder, backend="pil")  # the same tiles on every machine


@cache
def model_config(folder: str) -> Any:
    """The model folder's transformers config (its class's defaults filled in), read once."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


@dataclass(frozen=True)
class PictureTiling:
    """folder: ``model.path`` (its ``preprocessor_config.json``); model_type: its family;
    slots: ``video.max_frames``, the frame slots a picture's tiles take; tile: the tower's side;
    tile_tokens: the LM tokens of one tile (LLaVA's patch grid, SmolVLM2's and InternVL3's
        pixel-shuffled one)."""

    folder: str
    model_type: str
    slots: int
    tile: int
    tile_tokens: int

    def processor_kwargs(self) -> dict[str, Any]:
        """What kvideo asks of the processor beyond its own settings: no rescaling or
        normalization (the loader's), no batch padding, and SmolVLM2's tiles within the slots."""
        kwargs: dict[str, Any] = {"do_rescale": False, "do_normalize": False, "do_pad": False}
        kwargs["input_data_format"] = "channels_last"  # a picture 3 px high is not channels-first
        if self.model_type == "smolvlm":
            kwargs.update(smolvlm_limits(image_processor(self.folder), self.slots), return_row_col_info=True)
        if self.model_type == "internvl":  # its processor's images_kwargs, the thumbnail in a slot
            kwargs.update(internvl_limits(image_processor(self.folder), self.slots))
        return kwargs

    def most_tiles(self) -> int:
        """The most tiles one picture can take."""
        processor = image_processor(self.folder)
        if self.model_type == "smolvlm":
            limits = smolvlm_limits(processor, self.slots)
            side = -(-int(limits.get("size", {}).get("longest_edge", 0)) // self.tile)
            return side * side + 1 if limits.get("do_image_splitting", True) and side > 1 else 1
        if self.model_type == "internvl":
            most = int(internvl_limits(processor, self.slots)["max_patches"])
            return most + 1 if most > 1 else 1
        return 1 + max(rows * cols for rows, cols in self.llava_grids())

    def llava_grids(self) -> list[tuple[int, int]]:
        """LLaVA's tile grids, (rows, columns): the model config's ``image_grid_pinpoints``."""
        pinpoints = model_config(self.folder).image_grid_pinpoints
        return [(int(h) // self.tile, int(w) // self.tile) for h, w in pinpoints]

    def most_tokens(self) -> int:
        """The most LM tokens one picture can give, an upper bound for the token budget of
        batches (a picture's tiles are not pooled as a video's frames are). LLaVA: the whole's
        grid, its largest grid's tiles (their features unpadded at most; LLaVA-OneVision's
        ``anyres_max_N`` downscales any beyond 1.1**2 * N tiles' worth) and one newline per row of
        features. SmolVLM2: its image text for the most rows and columns, in its tokens."""
        from transformers import AutoTokenizer

        if self.model_type == "internvl":  # <img>, its tiles' tokens, </img>
            return self.most_tiles() * self.tile_tokens + 2
        if self.model_type == "smolvlm":
            side = math.isqrt(self.most_tiles() - 1)
            text = smolvlm_image_text(side, side, self.tile_tokens)
            tokens = AutoTokenizer.from_pretrained(self.folder).encode(text, add_special_tokens=False)
            return len(tokens) + 2  # the text merges with its neighbours: a token more at each edge
        cap = math.inf  # LLaVA-NeXT-Video keeps every feature
        if self.model_type == "llava_onevision":
            aspect = str(getattr(model_config(self.folder), "vision_aspect_ratio", None) or "anyres_max_9")
            cap = 1.21 * int(aspect.removeprefix("anyres_max_")) * self.tile_tokens
        grid = math.isqrt(self.tile_tokens)
        return self.tile_tokens + max(
            int(min(self.tile_tokens * rows * cols, cap)) + grid * rows for rows, cols in self.llava_grids()
        )

    def check_slots(self) -> None:
        """Refuse, in one line, a run whose pictures' tiles cannot fit their frame slots, or whose
        processor's tiles are not the tower's squares."""
        processor = image_processor(self.folder)
        side = _tile_side(processor)
        if side != self.tile:
            raise ValueError(
                f"model.path: {self.folder}'s image processor cuts pictures into {side} px tiles, but its "
                f"tower reads {self.tile} px frames (video.frame_size); they must be equal"
            )
        most = self.most_tiles()
        if most > self.slots:
            raise ValueError(
                f"video.max_frames={self.slots}: {self.model_type} cuts a picture into up to {most} tiles "
                f"(its whole and its largest image_grid_pinpoints grid), and a picture's tiles take its "
                f"frame slots; set video.max_frames>={most}, or leave pictures out of the data"
            )

    def tiles(self, pictures: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each picture (uint8 (H, W, 3), as decoded) of one record, as its (T, S, S, 3) uint8
        tiles in the processor's order; the record's pictures go in together, as the processor
        reads a sample's images (LLaVA-OneVision's multi-image rule depends on it)."""
        arrays = [picture.numpy() for picture in pictures]
        out = image_processor(self.folder)(images=[arrays], **self.processor_kwargs())
        pixels = out["pixel_values"]
        if self.model_type == "smolvlm":  # one list per sample: every picture's tiles in turn
            counts = [
                rows * cols + 1 if rows else 1
                for rows, cols in zip(out["rows"][0], out["cols"][0], strict=True)
            ]
            flat = [np.asarray(tile) for tile in pixels[0]]
            starts = np.cumsum([0, *counts])
            per_picture = [np.stack(flat[a:b]) for a, b in itertools.pairwise(starts)]
        elif self.model_type == "internvl":  # every picture's tiles in turn
            starts = np.cumsum([0, *out["num_patches"]])
            per_picture = [np.stack(pixels[a:b]) for a, b in itertools.pairwise(starts)]
        else:
            per_picture = [np.asarray(tiles) for tiles in pixels]
        return [
            torch.from_numpy(np.rint(t).clip(0, 255).astype(np.uint8)).permute(0, 2, 3, 1)
            for t in per_picture
        ]


def smolvlm_limits(processor: Any, slots: int) -> dict[str, Any]:
    """SmolVLM2's processor settings that keep a picture's tiles within ``slots``: at most
    ``k x k`` tiles and the whole (``k * k + 1 <= slots``), by its ``size['longest_edge']``; the
    picture whole when not even one tile and the whole fit (or the processor does not split)."""
    tile = processor.max_image_size["longest_edge"]
    if not processor.do_image_splitting:
        return {}
    side = math.isqrt(max(slots - 1, 0))
    if side < 1:
        return {"do_image_splitting": False}
    return {"size": {"longest_edge": min(processor.size["longest_edge"], side * tile)}}


def internvl_limits(processor: Any, slots: int) -> dict[str, Any]:
    """InternVL3's processor settings: its processor's ``crop_to_patches``, with ``max_patches``
    lowered so the tiles and the thumbnail fit ``slots``."""
    return {"crop_to_patches": True, "max_patches": max(1, min(processor.max_patches, slots - 1))}


def smolvlm_image_text(rows: int, cols: int, tokens_per_tile: int) -> str:
    """The text standing for a picture cut into ``rows`` x ``cols`` tiles and its whole (0 x 0:
    the whole alone): SmolVLM2's processor's own ``get_image_prompt_string``."""
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    marks = (FAKE_IMAGE_TOKEN, IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN)
    return str(get_image_prompt_string(rows, cols, tokens_per_tile, *marks))  # type: ignore[no-untyped-call]


def smolvlm_grid(processor: Any, picture_size: tuple[int, int], slots: int) -> tuple[int, int]:
    """The rows and columns of tiles SmolVLM2's processor cuts a picture of ``picture_size`` into
    under ``smolvlm_limits`` (0, 0: the picture whole, one tile)."""
    limits = smolvlm_limits(processor, slots)
    _, rows, cols = processor.get_number_of_image_patches(*picture_size, limits)
    return int(rows), int(cols)


def _tile_side(processor: Any) -> int:
    """The side of the processor's tiles: LLaVA's crop or resize size (InternVL3's resize size),
    SmolVLM2's max_image_size."""
    if hasattr(processor, "max_image_size"):
        return int(processor.max_image_size["longest_edge"])
    size = getattr(processor, "crop_size", None) or processor.size
    size = size if isinstance(size, dict) else size.__dict__
    return int(size.get("height") or size.get("shortest_edge") or 0)
