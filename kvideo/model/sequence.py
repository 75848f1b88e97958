"""Where the visual tokens sit in the LM's sequence: spliced after each sample's first
``visual_at`` text tokens (``kvideo.data.conversation``), at the front when ``visual_at`` is None.

Both model families build their sequence with ``splice`` and read the text positions back with
``text_positions``. A batch's samples may splice at different places (conversations whose
templates differ in length before ``<video>``); the sequence length is always ``V + L``, so the
batch stays one rectangular tensor. No data-dependent Python control flow, so it compiles.
"""

from __future__ import annotations

import torch
from torch import Tensor


def text_positions(
    visual_at: Tensor | None, text_len: int, visual_len: int, batch: int, device: torch.device
) -> Tensor:
    """(B, L) position of each text token in the spliced sequence: ``i`` before the visual
    tokens, ``i + V`` after them."""
    index = torch.arange(text_len, device=device).expand(batch, text_len)
    if visual_at is None:
        return index + visual_len
    return index + visual_len * (index >= visual_at.to(device)[:, None])


def visual_positions(visual_at: Tensor | None, visual_len: int, batch: int, device: torch.device) -> Tensor:
    """(B, V) position of each visual token in the spliced sequence."""
    index = torch.arange(visual_len, device=device).expand(batch, visual_len)
    return index if visual_at is None else index + visual_at.to(device)[:, None]


def splice(text: Tensor, visual: Tensor, visual_at: Tensor | None) -> Tensor:
    """(B, L, ...) text and (B, V, ...) visual values -> (B, V + L, ...) in sequence order."""
    if visual_at is None:
        return torch.cat([visual, text], dim=1)
    batch, text_len = text.shape[:2]
    visual_len = visual.shape[1]
    trailing = (1,) * (text.dim() - 2)
    rest = text.shape[2:]
    text_index = text_positions(visual_at, text_len, visual_len, batch, text.device)
    visual_index = visual_positions(visual_at, visual_len, batch, text.device)
    out = text.new_zeros((batch, text_len + visual_len, *rest))
    out = out.scatter(1, text_index.view(batch, text_len, *trailing).expand_as(text), text)
    return out.scatter(1, visual_index.view(batch, visual_len, *trailing).expand_as(visual), visual)
