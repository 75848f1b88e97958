"""Where the visual tokens sit in the LM's sequence: spliced after each sample's first
``visual_at`` text tokens (``kvideo.data.conversation``), at the front when ``visual_at`` is None.

Both model families build their sequence with ``splice`` and read the text positions back with
``text_positions``. A batch's samples may splice at different places (conversations whose
templates differ in length before ``<video>``); the sequence length is always ``V + L``, so the
batch stays one rectangular tensor. No data-dependent Python control flow, so it compiles.

Records with several visuals (``data.max_visuals``) give ``visual_at`` (B, K): the V visual
tokens are K equal blocks, block ``k`` spliced after ``visual_at[:, k]`` text tokens (in
increasing order). A sample with fewer visuals has empty blocks (no key) placed at the text's
end, so its text sits where it would with its own visuals only: a clamp to the text length keeps
them there for any text length (generation reads growing prefixes).
"""

from __future__ import annotations

import torch
from torch import Tensor


def visual_count(visual_at: Tensor | None) -> int:
    """How many visual blocks a batch splices: K of a (B, K) ``visual_at``, else 1."""
    return 1 if visual_at is None or visual_at.dim() == 1 else int(visual_at.shape[1])


def token_places(visual_at: Tensor, visual_len: int, text_len: int, device: torch.device) -> Tensor:
    """(B, V) the text tokens before each visual token, of a (B, K) ``visual_at``."""
    blocks = visual_at.shape[1]
    if visual_len % blocks:
        raise ValueError(f"{visual_len} visual tokens do not split into {blocks} equal blocks")
    at = visual_at.to(device).clamp(max=text_len)
    return at.repeat_interleave(visual_len // blocks, dim=1).contiguous()


def text_positions(
    visual_at: Tensor | None, text_len: int, visual_len: int, batch: int, device: torch.device
) -> Tensor:
    """(B, L) position of each text token in the spliced sequence: ``i`` before the visual
    tokens, ``i + V`` after them."""
    index = torch.arange(text_len, device=device).expand(batch, text_len)
    if visual_at is None:
        return index + visual_len
    if visual_at.dim() == 2:  # each text token after the visual tokens placed at or before it
        places = token_places(visual_at, visual_len, text_len, device)
        return index + torch.searchsorted(places, index.contiguous(), right=True)
    return index + visual_len * (index >= visual_at.to(device)[:, None])


def visual_positions(
    visual_at: Tensor | None, visual_len: int, batch: int, device: torch.device, text_len: int
) -> Tensor:
    """(B, V) position of each visual token in the spliced sequence."""
    index = torch.arange(visual_len, device=device).expand(batch, visual_len)
    if visual_at is None:
        return index
    if visual_at.dim() == 2:
        return index + token_places(visual_at, visual_len, text_len, device)
    return index + visual_at.to(device)[:, None]


def splice(text: Tensor, visual: Tensor, visual_at: Tensor | None) -> Tensor:
    """(B, L, ...) text and (B, V, ...) visual values -> (B, V + L, ...) in sequence order."""
    if visual_at is None:
        return torch.cat([visual, text], dim=1)
    batch, text_len = text.shape[:2]
    visual_len = visual.shape[1]
    trailing = (1,) * (text.dim() - 2)
    rest = text.shape[2:]
    text_index = text_positions(visual_at, text_len, visual_len, batch, text.device)
    visual_index = visual_positions(visual_at, visual_len, batch, text.device, text_len)
    out = text.new_zeros((batch, text_len + visual_len, *rest))
    out = out.scatter(1, text_index.view(batch, text_len, *trailing).expand_as(text), text)
    return out.scatter(1, visual_index.view(batch, visual_len, *trailing).expand_as(visual), visual)
