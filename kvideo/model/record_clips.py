"""A batch's clips, one per visual of its records, for a released VLM (``model=pretrained``).

The other families splice K equal token blocks per sample and leave a record's unused slots in
place (``kvideo.model.sequence``). A released VLM's text instead holds one run of placeholder ids
per clip it is given, so an unused slot must not become a clip at all: ``record_clips`` unfolds a
batch of K slots per sample into the clips its records really hold, each with its row and its
place in that row's text, in reading order (the order the model fills its placeholders in).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class RecordClips:
    """frames / frame_mask / frame_times / frame_region: per clip (N, ...), as a batch of one
    visual per sample is laid out.
    rows: the batch row each clip belongs to (N,), nondecreasing.
    places: each clip's place in its row's text (N,), increasing within a row.
    pictures: which clips are pictures (N,), for the model's image route.
    picture_sizes: each clip's picture size (N,), (height, width) as decoded, for the families
        whose image route tiles a picture (``kvideo.data.picture_tiles``); (0, 0) otherwise."""

    frames: Tensor
    frame_mask: Tensor
    frame_times: Tensor
    frame_region: Tensor | None
    rows: list[int]
    places: list[int]
    pictures: list[bool]
    picture_sizes: list[tuple[int, int]]

    def of_row(self, row: int) -> list[int]:
        """The clips of batch row ``row``, in order."""
        return [clip for clip, owner in enumerate(self.rows) if owner == row]

    def in_rows(self, order: list[int]) -> list[int]:
        """The clips of the rows in ``order``, row after row."""
        return [clip for row in order for clip in self.of_row(row)]


def record_clips(
    frames: Tensor,
    frame_mask: Tensor,
    frame_times: Tensor,
    frame_region: Tensor | None,
    visual_at: Tensor,
    text_width: int,
    picture: Tensor | None = None,
    picture_size: Tensor | None = None,
) -> RecordClips:
    """The clips of a batch whose ``visual_at`` is (B,) (one each) or (B, K) (K slots each, the
    frames axis holding K clips). A slot placed at the text's end (``text_width``) is unused,
    except a sample's first, which every sample has (``kvideo.data.clip_dataset``). ``picture``
    (B,) or (B, K) bool: which slots hold pictures (None = none); ``picture_size`` (B, 2) or
    (B, K, 2): their sizes (None = not tiled)."""
    batch = frames.shape[0]
    flags = [False] * visual_at.numel() if picture is None else [bool(p) for p in picture.flatten().tolist()]
    sizes: list[tuple[int, int]] = [(0, 0)] * visual_at.numel()
    if picture_size is not None:
        sizes = [(int(h), int(w)) for h, w in picture_size.reshape(-1, 2).tolist()]
    if visual_at.dim() == 1:
        rows = list(range(batch))
        return RecordClips(
            frames, frame_mask, frame_times, frame_region, rows, visual_at.tolist(), flags, sizes
        )
    slots = visual_at.shape[1]
    used = [
        (row, slot)
        for row in range(batch)
        for slot in range(slots)
        if slot == 0 or int(visual_at[row, slot]) < text_width
    ]
    index = [row * slots + slot for row, slot in used]

    def clips(values: Tensor) -> Tensor:
        per_slot = values.reshape(batch * slots, values.shape[1] // slots, *values.shape[2:])
        return per_slot[index]

    return RecordClips(
        clips(frames),
        clips(frame_mask),
        clips(frame_times),
        None if frame_region is None else frame_region.reshape(batch * slots, -1)[index],
        [row for row, _ in used],
        [int(visual_at[row, slot]) for row, slot in used],
        [flags[i] for i in index],
        [sizes[i] for i in index],
    )
