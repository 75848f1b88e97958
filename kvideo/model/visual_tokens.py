"""Frames to visual tokens at the LM's width: the vision part per frame, then the projector.
Both model families run this (``VisualTokens`` is their shared mixin)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kvideo.model.projector import FrameProjector
from kvideo.model.regions import patch_coverage
from kvideo.model.sequence import visual_count


def frames_to_visual_tokens(
    vision: nn.Module,
    projector: FrameProjector,
    frames: Tensor,
    frame_mask: Tensor,
    frame_times: Tensor | None,
    frame_region: Tensor | None = None,
    *,
    resize: str = "square",
) -> tuple[Tensor, Tensor]:
    """(B, F, 3, H, W) frames -> ``(visual tokens (B, V, D) at the LM width, keys (B, V) bool)``:
    the vision part per frame (frames folded into the batch), then the projector. Both model
    families run this. ``keys`` are the tokens the LM may attend to.

    ``frame_region`` (B, 4) (``kvideo.model.regions``) with ``resize``: ``keep_aspect`` pools each
    token from the picture's patches only (the builtin ViT also hides padding patches from the
    others), and a token that pools no picture is not a key; ``max_pixels`` runs each clip at its
    own size (clips of one shape together, so a clip's tokens never depend on its batch) and pads
    the token rows to the batch's longest, V = F * the most tokens per frame.
    """
    f = frames.shape[1]
    if frame_mask.shape != frames.shape[:2]:
        raise ValueError(
            f"frame_mask {tuple(frame_mask.shape)} does not match frames (B, F) {tuple(frames.shape[:2])}"
        )
    frame_keys = frame_mask.to(torch.bool)
    if frame_region is None or resize == "square":
        grid = vision(frames.flatten(0, 1))  # (B*F, gh, gw, C)
        visual: Tensor = projector(grid, f, frame_mask, frame_times)
        return visual, frame_keys.repeat_interleave(projector.tokens_per_frame, dim=1)
    if resize == "keep_aspect":
        canvas = (frames.shape[-2], frames.shape[-1])
        patch = int(getattr(vision, "patch_size", 0))  # the builtin ViT and HF towers; not timm
        patch_keys = None
        if patch:
            coverage = patch_coverage(frame_region, canvas, (canvas[0] // patch, canvas[1] // patch))
            patch_keys = (coverage > 0).repeat_interleave(f, dim=0)
        grid = vision(frames.flatten(0, 1), patch_keys)
        if not patch:
            coverage = patch_coverage(frame_region, canvas, (grid.shape[1], grid.shape[2]))
        visual = projector(
            grid, f, frame_mask, frame_times, patch_weight=coverage.repeat_interleave(f, dim=0)
        )
        valid = projector.token_validity(coverage)  # (B, T)
        return visual, (frame_keys[:, :, None] & valid[:, None, :]).flatten(1)
    return _clips_at_own_size(vision, projector, frames, frame_keys, frame_times, frame_region)


def _clips_at_own_size(
    vision: nn.Module,
    projector: FrameProjector,
    frames: Tensor,
    frame_keys: Tensor,
    frame_times: Tensor | None,
    frame_region: Tensor,
) -> tuple[Tensor, Tensor]:
    """``resize=max_pixels``: each clip's picture (at the top left of its frames) through the
    tower and the projector at its own shape; token rows right-padded, padding not a key."""
    b, f = frames.shape[:2]
    grid = getattr(vision, "grid", None)  # the square's patch grid (HFVisionTower)
    if grid is None:
        raise ValueError("video.resize=max_pixels needs a vision part with a patch grid (model=hf_vlm)")
    stride = int(grid) // projector.side
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, (_, _, h, w) in enumerate(frame_region.tolist()):
        shapes.setdefault((h, w), []).append(i)
    tokens_of: dict[int, Tensor] = {}
    for (h, w), clips in shapes.items():
        index = torch.tensor(clips, device=frames.device)
        picture = frames.index_select(0, index)[..., :h, :w]
        grid = vision(picture.flatten(0, 1))
        times = None if frame_times is None else frame_times.index_select(0, index.to(frame_times.device))
        tokens = projector(grid, f, frame_keys.index_select(0, index), times, stride=stride)
        tokens_of.update(zip(clips, tokens, strict=True))
    kept = [tokens_of[i] for i in range(b)]
    longest = max(row.shape[0] for row in kept)
    visual = kept[0].new_zeros((b, longest, kept[0].shape[-1]))
    keys = torch.zeros(b, longest, dtype=torch.bool, device=frames.device)
    for i, row in enumerate(kept):
        visual[i, : row.shape[0]] = row
        keys[i, : row.shape[0]] = frame_keys[i].repeat_interleave(row.shape[0] // f)
    return visual, keys


class VisualTokens:
    """``visual_tokens`` for a model with ``vision``, ``projector`` and ``resize`` (both families)."""

    vision: nn.Module
    projector: FrameProjector
    resize: str

    def visual_tokens(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        frame_times: Tensor | None,
        frame_region: Tensor | None = None,
        visual_at: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(visual tokens (B, V, D), keys (B, V))``: ``frames_to_visual_tokens`` of this model.

        ``visual_at`` (B, K) (records with several visuals, ``kvideo.model.sequence``): the frames
        axis holds K clips of F / K frames each (``frame_region`` (B, K, 4)); each goes through
        the vision part and the projector as a clip of its own (its own frame positions, times
        and picture region), and the V tokens are their K blocks in order, as the splice places
        them. None or (B,): one clip a sample."""
        visuals = visual_count(visual_at)
        if visuals == 1:
            return frames_to_visual_tokens(
                self.vision, self.projector, frames, frame_mask, frame_times, frame_region, resize=self.resize
            )
        batch = frames.shape[0]

        def clips(values: Tensor) -> Tensor:
            return values.reshape(batch * visuals, values.shape[1] // visuals, *values.shape[2:])

        tokens, keys = frames_to_visual_tokens(
            self.vision,
            self.projector,
            clips(frames),
            clips(frame_mask),
            None if frame_times is None else clips(frame_times),
            None if frame_region is None else frame_region.flatten(0, 1),
            resize=self.resize,
        )
        return tokens.reshape(batch, -1, tokens.shape[-1]), keys.reshape(batch, -1)

    def rows_visual_tokens(
        self,
        frames: Tensor,
        frame_mask: Tensor,
        frame_times: Tensor | None,
        frame_region: Tensor | None,
        *,
        visual: tuple[Tensor, Tensor] | None,
        clip_of_row: Tensor | None,
        visual_at: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """What a forward reads for its text rows: ``(per_clip, tokens, keys)``.

        ``visual``: the clips' ``(tokens, keys)`` from an earlier forward (the vision part is
        then not run again); ``clip_of_row``: the clip each text row reads (None = row ``i``
        reads clip ``i``). ``per_clip`` is the forward's ``visual_tokens`` / ``visual_keys``
        outputs, per clip and detached: they are for scoring, and FSDP2 warns of a view of the
        graph returned by an FSDP model. ``visual_at`` as in ``visual_tokens``.
        """
        clip_tokens, clip_keys = visual or self.visual_tokens(
            frames, frame_mask, frame_times, frame_region, visual_at
        )
        per_clip = {"visual_tokens": clip_tokens.detach(), "visual_keys": clip_keys.detach()}
        if clip_of_row is None:
            return per_clip, clip_tokens, clip_keys
        return per_clip, clip_tokens[clip_of_row], clip_keys[clip_of_row]
