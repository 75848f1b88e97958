"""Packing (``data.packing``): a batch's real tokens laid out in as few rows as fit, each sample
attending to its own tokens only, so no layer computes padding.

A padded batch is ``(B, S)``: every sample padded to the batch's longest visual part and to
``model.max_text_len`` text tokens. Packed, the same tokens are ``(R, T)`` rows of whole samples,
``T`` at most ``data.max_tokens_per_row`` (0 = ``S``, a row no longer than a padded one), with
padding only at the end of a row. Each token keeps the position it has unpacked and attends to the
tokens of its own sample that precede it, so every real token's output is the padded batch's (to
float rounding): padding was already invisible to real tokens there (the masks in
``kvideo.model.vlm`` and ``kvideo.model.hf_vlm``), so dropping it changes no real token's keys.

The models build the padded sequence as before, ``pack`` it, run the LM on the rows, and
``unpack`` what they read back. Which sample goes to which row is decided here on the host (one
``tolist`` of the samples' lengths per forward), rows balanced so that the longest row, which sets
``T``, is as short as it can be.

Written here rather than taken from transformers: ``DataCollatorWithFlattening`` packs token ids
in the collate, but a VLM's sample lengths are only known after the vision part (padded frames
and ``max_pixels`` clips give each sample its own visual token count), so the layout has to be made
from the model's own sequence. The attention itself is not written here: the builtin LM takes the
block-diagonal causal mask ``block_causal_mask`` through SDPA, and a transformers LM gets position
ids that restart at each sample, from which transformers builds the same mask itself (its
``find_packed_sequence_indices``) or, with flash attention, its varlen path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

EXTRA_ROWS = 3  # row counts tried past the fewest (``balanced_rows``)


def balanced_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Samples (indices into ``lengths``) per row, rows of at most ``capacity`` tokens (a sample
    longer than that gets a row of its own length), laid out to compute the fewest token slots
    (rows times the fullest row). For each row count from the fewest that can hold the tokens up
    to ``EXTRA_ROWS`` more, samples go longest first to the row that holds least so far; the count
    whose fullest row times rows is smallest wins (one more row can even out rows enough to cost
    less). Deterministic: ties go to the lower index and the fewer rows, so a resumed run packs
    the same batch into the same rows. Each row lists its samples in order."""
    capacity = max(capacity, *lengths, 1)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    fewest = max(1, math.ceil(sum(lengths) / capacity))
    best: tuple[int, list[list[int]]] | None = None
    for rows in range(fewest, len(lengths) + 1):
        fill = [0] * rows
        members: list[list[int]] = [[] for _ in range(rows)]
        for i in order:
            row = min(range(rows), key=lambda r: (fill[r], r))
            fill[row] += lengths[i]
            members[row].append(i)
        if max(fill) <= capacity and (best is None or rows * max(fill) < best[0]):
            best = (rows * max(fill), [sorted(row) for row in members if row])
        if best is not None and rows >= fewest + EXTRA_ROWS:
            break
    assert best is not None  # one row per sample always fits: capacity >= every length
    return best[1]


ROW_END = -1  # a row's end padding
SHARED = -2  # a prefix the samples of its row share (candidate captions of one clip)


@dataclass(frozen=True)
class PackedRows:
    """Where each real token of a padded ``(B, S)`` batch goes in the packed ``(rows, length)``.

    source: (N,) flat index of each real token in the padded batch (``b * S + s``), in order.
    target: (N,) flat index of the same token in the packed rows (``r * length + t``).
    segment: (rows, length) the sample each slot holds, ``ROW_END`` for a row's end padding,
        ``SHARED`` for a prefix every sample of the row reads (``shared_prefix_layout``).
    batch / seq: the padded shape ``(B, S)``.
    """

    source: Tensor
    target: Tensor
    segment: Tensor
    batch: int
    seq: int

    @property
    def rows(self) -> int:
        return int(self.segment.shape[0])

    @property
    def length(self) -> int:
        return int(self.segment.shape[1])

    @property
    def computed(self) -> int:
        """Token slots the LM computes (``rows * length``)."""
        return self.rows * self.length


def pack_layout(real: Tensor, max_tokens_per_row: int) -> PackedRows:
    """The layout of the ``real`` (B, S) bool tokens in rows of at most ``max_tokens_per_row``
    (0 = S), each sample whole and its tokens in order."""
    batch, seq = real.shape
    lengths = real.sum(dim=1).tolist()  # the one host sync: row assignment is host logic
    rows = balanced_rows(lengths, max_tokens_per_row or seq)
    row_of = [0] * batch
    start_of = [0] * batch
    fills = []
    for r, members in enumerate(rows):
        fill = 0
        for i in members:
            row_of[i], start_of[i] = r, fill
            fill += lengths[i]
        fills.append(fill)
    length = max(fills)
    device = real.device
    counts = torch.tensor(lengths, device=device)
    sample = torch.repeat_interleave(torch.arange(batch, device=device), counts)  # (N,)
    first = torch.cumsum(counts, 0) - counts  # each sample's first token among the N
    rank = torch.arange(sample.shape[0], device=device) - first[sample]
    slot = torch.tensor(start_of, device=device)[sample] + rank
    target = torch.tensor(row_of, device=device)[sample] * length + slot
    segment = torch.full((len(rows) * length,), ROW_END, dtype=torch.long, device=device)
    segment[target] = sample
    source = real.flatten().nonzero().squeeze(1)
    return PackedRows(source, target, segment.view(len(rows), length), batch, seq)


def shared_prefix_layout(real: Tensor, prefix_len: Tensor, clip_of_row: Tensor) -> PackedRows:
    """One row per clip for scoring candidate captions (``kvideo.train.evaluate``): the clip's
    prefix (its first ``prefix_len`` sequence positions: the text before the video, which is the
    same for every candidate, and the visual tokens), once, then each candidate's own real tokens.
    Every candidate reads the shared prefix and its own tokens, so its outputs are those of its
    padded row, while the prefix is computed once instead of once per candidate.

    For forwards without a gradient: the shared slots take one copy of values that are equal in
    every row of the clip, and a backward would count them once per row."""
    batch, seq = real.shape
    host = real.cpu()
    prefix, clips = prefix_len.tolist(), clip_of_row.tolist()
    row_of_clip = {clip: r for r, clip in enumerate(dict.fromkeys(clips))}
    ends: dict[int, int] = {}  # clip -> slots filled in its row
    sources, slots, owners = [], [], []
    for b, clip in enumerate(clips):
        shared = host[b, : prefix[b]].nonzero().squeeze(1)
        own = host[b, prefix[b] :].nonzero().squeeze(1) + prefix[b]
        start = ends.setdefault(clip, shared.numel())  # the first row of a clip sets its prefix
        ends[clip] = start + own.numel()
        sources.append(b * seq + torch.cat([shared, own]))
        slots.append(torch.cat([torch.arange(shared.numel()), start + torch.arange(own.numel())]))
        owners.append(torch.cat([torch.full((shared.numel(),), SHARED), torch.full((own.numel(),), b)]))
    length = max(ends.values())
    rows = torch.tensor([row_of_clip[clip] for clip in clips])
    target = torch.cat([row * length + slot for row, slot in zip(rows, slots, strict=True)])
    segment = torch.full((len(row_of_clip) * length,), ROW_END, dtype=torch.long)
    segment[target] = torch.cat(owners)
    device = real.device
    return PackedRows(
        torch.cat(sources).to(device),
        target.to(device),
        segment.view(len(row_of_clip), length).to(device),
        batch,
        seq,
    )


def prefix_length(visual_at: Tensor | None, visual_len: int, real: Tensor) -> Tensor:
    """(B,) the sequence positions before each row's text after the video: the text before the
    video (``visual_at``; None = none) and the ``visual_len`` visual tokens."""
    before = torch.zeros(real.shape[0], dtype=torch.long, device=real.device)
    return (before if visual_at is None else visual_at.to(real.device)) + visual_len


def prefix_text_agrees(input_ids: Tensor, visual_at: Tensor | None, clip_of_row: Tensor) -> bool:
    """Whether the rows of each clip have the same text before the video (what
    ``shared_prefix_layout`` takes for granted: candidates of one prompt and template do); never
    for rows with several visuals."""
    if visual_at is None:
        return True
    if visual_at.dim() == 2:
        return False  # several visual blocks: no one shared prefix
    seen: dict[int, tuple[int, ...]] = {}
    for row, (clip, at) in enumerate(zip(clip_of_row.tolist(), visual_at.tolist(), strict=True)):
        text = tuple(input_ids[row, :at].tolist())
        if seen.setdefault(clip, text) != text:
            return False
    return True


def pack(values: Tensor, layout: PackedRows) -> Tensor:
    """(B, S, ...) padded values -> (rows, length, ...) packed; row padding is 0."""
    rest = values.shape[2:]
    flat = values.reshape(layout.batch * layout.seq, *rest).index_select(0, layout.source)
    out = values.new_zeros((layout.computed, *rest)).index_copy(0, layout.target, flat)
    return out.view(layout.rows, layout.length, *rest)


def unpack(values: Tensor, layout: PackedRows) -> Tensor:
    """(rows, length, ...) packed values -> (B, S, ...) in the padded layout; what was not a real
    token is 0."""
    rest = values.shape[2:]
    flat = values.reshape(layout.computed, *rest).index_select(0, layout.target)
    out = values.new_zeros((layout.batch * layout.seq, *rest)).index_copy(0, layout.source, flat)
    return out.view(layout.batch, layout.seq, *rest)


def sample_order(layout: PackedRows) -> list[int]:
    """The samples (batch indices) in the order the packed rows hold them, row after row: the
    order in which a model that fills placeholder tokens in reading order meets their visual
    features (``kvideo.model.video_inputs``)."""
    flat = layout.segment.flatten()
    return [int(i) for i in torch.unique_consecutive(flat[flat >= 0]).tolist()]


def slots_of(positions: Tensor, layout: PackedRows) -> Tensor:
    """(B, L) the packed slot (``r * length + t``) of each padded sequence position in
    ``positions`` (B, L); -1 where that position holds no real token."""
    slot_of = torch.full((layout.batch * layout.seq,), -1, dtype=torch.long, device=positions.device)
    slot_of[layout.source] = layout.target
    return slot_of.view(layout.batch, layout.seq).gather(1, positions)


def columns_holding(slot: Tensor, layout: PackedRows) -> Tensor:
    """The packed columns (sorted) where some row holds one of ``slot``'s tokens (-1s ignored):
    the ``logits_to_keep`` that computes the head only where a logit is read. Never empty (column
    0 when nothing is read: a batch whose every label is ignored), so the loss keeps its graph."""
    used = torch.zeros(layout.computed, dtype=torch.bool, device=slot.device)
    used[slot[slot >= 0]] = True
    used[0] |= ~used.any()  # a tensor op: no host sync to ask whether anything is read
    return used.view(layout.rows, layout.length).any(dim=0).nonzero().squeeze(1)


def unpack_columns(values: Tensor, columns: Tensor, slot: Tensor, layout: PackedRows) -> Tensor:
    """(rows, len(columns), ...) values of the packed ``columns`` -> (B, L, ...) at ``slot`` (B, L)
    (``slots_of``); 0 where ``slot`` is -1."""
    found = slot >= 0
    row, column = slot.clamp(min=0) // layout.length, slot.clamp(min=0) % layout.length
    flat = row * columns.shape[0] + torch.searchsorted(columns, column)
    rest = values.shape[2:]
    picked = values.reshape(-1, *rest).index_select(0, flat.flatten()).view(*slot.shape, *rest)
    # in place: ``picked`` is index_select's own new tensor, and the logits are the largest one here
    return picked.masked_fill_(~found.view(*slot.shape, *[1] * len(rest)), 0)


def block_causal_mask(layout: PackedRows) -> Tensor:
    """Boolean SDPA mask (rows, 1, length, length), True = may attend: causal within each sample's
    slots and to its row's ``SHARED`` prefix, nothing across samples. A row's end padding attends
    to itself (no query has no key)."""
    segment = layout.segment
    same = (segment[:, :, None] == segment[:, None, :]) | (segment[:, None, :] == SHARED)
    causal = torch.ones(layout.length, layout.length, dtype=torch.bool, device=segment.device).tril()
    return (same & causal)[:, None]


def restarting_positions(positions: Tensor, layout: PackedRows) -> Tensor:
    """(B, S) per-sample position ids -> (rows, length), a row's end padding numbered from 0 as a
    sample of its own: every sample then starts where a position does not follow its predecessor
    by 1, which is how transformers finds packed samples (each sample's first position must be
    0 or not one more than the previous slot's)."""
    packed = pack(positions, layout)
    pad = layout.segment < 0
    tail = torch.cumsum(pad.long(), dim=1) - 1
    return torch.where(pad, tail, packed)


def real_text(input_ids: Tensor, text_len: Tensor | None) -> Tensor:
    """(B, L) bool: the text tokens that are not padding (``text_len`` (B,) each sample's count;
    None = every token)."""
    if text_len is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    return index[None] < text_len.to(input_ids.device)[:, None]


def token_counts(real: Tensor, computed: int) -> dict[str, Tensor]:
    """A forward's ``tokens`` (the real ones, ``real`` (B, S) bool) and ``computed_tokens`` (the
    token slots its LM computed: ``B * S`` padded, ``rows * length`` packed), as 0-dim long tensors
    on the batch's device, so that adding them up costs no device sync; their ratio over a window is
    the run's ``token_efficiency``."""
    return {
        "tokens": real.sum(),
        "computed_tokens": torch.full((), computed, dtype=torch.long, device=real.device),  # a fill, no copy
    }
