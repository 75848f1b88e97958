"""A batch's video as a released VLM takes it (``model=pretrained``), with what packing needs to
reorder it.

The model puts each clip's visual features into the sequence at its placeholder tokens in reading
order: flattened row after row, the first placeholders get the first clip's features. Packed
(``data.packing``), the samples are read in their rows' order, not the batch's, so the video
arguments must follow that order too. Each argument's leading dimension is a run of entries per
clip (Qwen's patches: ``t * h * w`` rows; LLaVA's and SmolVLM2's frame stacks: one; InternVL3's
frames: one per frame), and ``clip_rows`` says how many, so ``in_order`` can reorder them without
knowing the family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class VideoInputs:
    """kwargs: the model's video keyword arguments for the batch, clips in batch order.
    blocks: each clip's token ids in the text, or (SmolVLM2, InternVL3) its text.
    clip_rows: for each argument, how many leading entries each clip has (B lists)."""

    kwargs: dict[str, Tensor]
    blocks: list[list[int]] | list[str]
    clip_rows: dict[str, list[int]]

    def in_order(self, order: list[int]) -> dict[str, Tensor]:
        """``kwargs`` with the clips in ``order`` (batch indices): the features of clip
        ``order[0]`` come first, as its placeholders do in the packed rows."""
        if order == sorted(order):
            return self.kwargs
        reordered = {}
        for key, value in self.kwargs.items():
            pieces = torch.split(value, self.clip_rows[key])
            reordered[key] = torch.cat([pieces[i] for i in order])
        return reordered
