"""The optional keys of a batch: inputs only some datasets and resize modes give the model.

A caption batch with square frames carries neither, and the models then take their plain path
(``[visual | text]``, every patch a picture patch); torch-free, so the trainer imports it cheaply.
"""

from __future__ import annotations

from typing import Any

# Models take these as keyword arguments of the same names (None = the plain layout):
# ``visual_at`` (conversations: text tokens before the visual tokens, kvideo.data.conversation) and
# ``frame_region`` (video.resize keep_aspect / max_pixels: where the picture is, kvideo.model.regions)
# and ``picture`` (which clips are pictures: only for a released VLM, ``ClipSettings.marks_pictures``)
# and ``picture_size`` (a tiled picture's size: ``ClipSettings.picture_tiling``).
OPTIONAL_INPUTS = ("visual_at", "frame_region", "picture", "picture_size")


def optional_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The optional model inputs ``batch`` has, for ``model.generate(..., **optional_inputs(batch))``."""
    return {key: batch[key] for key in OPTIONAL_INPUTS if key in batch}


def forward_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """``optional_inputs`` plus ``text_len`` (each sample's text before its padding), for
    ``model(..., **forward_inputs(batch))``: the forward packs (``data.packing``) and counts real
    tokens by it, while a generation context has no padding to tell."""
    return {**optional_inputs(batch), **({"text_len": batch["text_len"]} if "text_len" in batch else {})}
