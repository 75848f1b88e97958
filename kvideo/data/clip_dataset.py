"""One manifest row -> one fixed-shape training sample; a bad video never raises. A row naming a
picture (``kvideo.decode.image.is_image``) is a one-frame clip at time 0.

The dataset knows captions and rows, the decoder knows video files, the sampler knows
timestamps: this module only wires them together, pads to ``max_frames`` and turns
decode failures into counted, masked (or replaced) samples.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from kvideo.data.rows import ClipRow, video_source
from kvideo.data.sharding import ShardLayout
from kvideo.data.tokenizer import IGNORE_INDEX, encode_row
from kvideo.decode import build_decoder
from kvideo.decode.errors import DecodeError
from kvideo.decode.image import decode_image, is_image
from kvideo.decode.types import ClipMeta, DecodedClip, VideoDecoder
from kvideo.sampling import timestamps

if TYPE_CHECKING:
    from kvideo.data.mixture import MixtureLayout
    from kvideo.data.settings import ClipSettings
    from kvideo.data.watchdog import InFlight

# How many following rows "replace" tries before giving up and masking the slot.
MAX_REPLACEMENT_TRIES = 8


@dataclass(frozen=True)
class SamplingSpec:
    """What the sampler needs besides the clip's own metadata."""

    policy: str
    fps: float
    min_frames: int
    max_frames: int
    seed: int


def sample_timestamps(spec: SamplingSpec, epoch: int, index: int, meta: ClipMeta) -> list[float]:
    return timestamps(
        spec.policy,
        duration=meta.duration,
        fps=spec.fps,
        min_frames=spec.min_frames,
        max_frames=spec.max_frames,
        num_frames=meta.num_frames,
        native_fps=meta.native_fps,
        frame_starts=meta.frame_starts,
        seed=spec.seed,
        epoch=epoch,
        index=index,
    )


def shard_layout(rows: list[ClipRow], buffer: int) -> ShardLayout | None:
    """The shards ``rows`` come from (runs of consecutive rows with the same ``shard``), or
    ``None`` when every row is a file of its own."""
    if not any(row.shard for row in rows):
        return None
    sizes = tuple(sum(1 for _ in run) for _, run in itertools.groupby(rows, key=lambda row: row.shard))
    return ShardLayout(sizes, buffer)


class VideoClipDataset(Dataset[dict[str, Any]]):
    """Map-style dataset of decoded, padded, tokenized clips.

    Each item: ``frames`` uint8 (F, S, S, 3) zero-padded, ``frame_mask`` bool (F,),
    ``frame_times`` float (F,) (actual display times, -1 for padding), ``input_ids`` /
    ``labels`` long (L,) (labels -100 outside the caption or assistant turns), ``text_len`` (the
    text's tokens before its padding), ``index``, ``skip_reason``
    ("" when the clip decoded), ``path`` and ``caption``. A slot whose clip could not be
    used under the ``mask`` policy has no valid frame and no loss. A conversation dataset's
    items also carry ``visual_at`` / ``answer_at`` (text tokens before the visual tokens /
    before the last answer, ``kvideo.data.conversation``); a caption dataset's visual tokens
    come first, and its batches leave the keys out so the models take their plain path.

    ``on_device`` decoders (decord on GPU) return frames on the GPU; such a dataset must
    be read in the training process (see ``kvideo.data.loader``), never in forked workers.

    ``layout``: how the rows lie in tar shards (``None`` for files of their own), which makes
    the loader stream them shard by shard (``kvideo.data.sharding``), or the ``mixture``'s sources
    (``kvideo.data.mixture``), which also names each item's ``source``.
    """

    def __init__(
        self,
        rows: list[ClipRow],
        settings: ClipSettings,
        tokenizer: Any,
        *,
        local_rank: int = 0,
        blocklist: frozenset[str] = frozenset(),
        mixture: MixtureLayout | None = None,
    ) -> None:
        self.rows = rows
        self.settings = settings
        self.tokenizer = tokenizer
        self.local_rank = local_rank
        self.blocklist = blocklist
        self.in_flight: InFlight | None = None  # set per DataLoader by kvideo.data.loader
        self.crashed: set[int] = set()  # indices whose decode killed a worker twice (watchdog)
        self.left_out: dict[str, int] = {}  # rows the builder's listing left out, per reason
        self.epoch = 0
        self.mixture = mixture
        self.layout = mixture or shard_layout(rows, settings.data.shuffle_buffer)
        video = settings.video
        self.spec = SamplingSpec(
            video.sampling_policy, video.fps, video.min_frames, video.max_frames, settings.seed
        )
        self._decoder: VideoDecoder | None = None
        self._decoder_pid = -1
        # Tokenize once: texts never change, and workers inherit the result.
        self._text = [encode_row(tokenizer, row, video.prompt, settings.max_text_len) for row in rows]
        self._token_costs: list[int] | None = None
        self.conversational = tokenizer.captions_as_conversations or any(row.turns for row in rows)
        self.resize = settings.resize
        # keep_aspect pads with the vision part's mean colour (LLaVA's pad), which normalizes to ~0.
        mean = settings.statistics[0]
        self.pad_colour = torch.tensor([round(255 * m) for m in mean], dtype=torch.uint8)

    def token_costs(self) -> list[int]:
        """Each sample's tokens for ``data.batch_tokens`` (``kvideo.data.token_batches``), known
        before decoding: with ``data.packing`` its text before padding plus the most visual
        tokens its frames can give (an upper bound); without, the padded length the model
        computes for every sample."""
        if self._token_costs is None:
            settings = self.settings
            if settings.data.packing:
                self._token_costs = [settings.visual_tokens + text.text_len for text in self._text]
            else:
                self._token_costs = [settings.padded_tokens] * len(self._text)
        return self._token_costs

    def set_epoch(self, epoch: int) -> None:
        """Epoch keys the random_segment jitter so each epoch sees different frames."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def decoder(self) -> VideoDecoder:
        # Built per process: decoder objects own threads, which do not survive fork.
        if self._decoder is None or self._decoder_pid != os.getpid():
            self._decoder = build_decoder(self.settings.decoder, local_rank=self.local_rank)
            self._decoder_pid = os.getpid()
        return self._decoder

    def _decode(self, index: int) -> DecodedClip:
        row = self.rows[index]
        if row.path in self.blocklist:
            raise DecodeError("blocklisted", row.path)
        if index in self.crashed:
            raise DecodeError("worker_crash", row.path, "its decode killed two DataLoader workers")
        if self.in_flight is not None:
            self.in_flight.mark(index)
        source = video_source(row, retry_s=self.settings.data.remote_retry_s)
        size = self.settings.video.frame_size if self.resize.mode == "square" else self.resize
        if is_image(row.path):  # a picture: one frame at time 0 (kvideo.decode.image)
            return decode_image(source, size)
        return self.decoder.decode(
            source,
            partial(sample_timestamps, self.spec, self.epoch, index),
            size=size,
            start=row.start,
            end=row.end,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        skip_reason, source = "", index
        try:
            clip = self._decode(index)
        except DecodeError as err:
            skip_reason, clip = err.reason, None
            if self.settings.data.bad_sample_policy == "replace":
                clip, source = self._replacement(index)
        finally:
            if self.in_flight is not None:
                self.in_flight.clear()
        return self._assemble(index, source, row, clip, skip_reason)

    def _replacement(self, index: int) -> tuple[DecodedClip | None, int]:
        """The next decodable row after ``index`` (deterministic, so resume-safe)."""
        for step in range(1, min(MAX_REPLACEMENT_TRIES, len(self.rows)) + 1):
            candidate = (index + step) % len(self.rows)
            try:
                return self._decode(candidate), candidate
            except DecodeError:
                continue
        return None, index

    def _assemble(
        self, index: int, source: int, row: ClipRow, clip: DecodedClip | None, skip_reason: str
    ) -> dict[str, Any]:
        max_frames = self.settings.video.max_frames
        device = clip.frames.device if clip is not None else torch.device("cpu")
        frames, region = self._canvas(clip, device)
        frame_mask = torch.zeros(max_frames, dtype=torch.bool)
        frame_times = torch.full((max_frames,), -1.0)
        text = self._text[source]
        labels = torch.tensor(text.labels, dtype=torch.long)
        if clip is None:
            labels.fill_(IGNORE_INDEX)  # nothing to learn from a slot without frames
        else:
            n = min(len(clip.times), max_frames)
            top, left, h, w = region
            frames[:n, top : top + h, left : left + w] = clip.frames[:n]
            frame_mask[:n] = True
            frame_times[:n] = torch.tensor(clip.times[:n])
        extra: dict[str, Any] = {}
        if self.conversational:
            extra.update(visual_at=text.visual_at, answer_at=text.answer_at)
        if self.resize.mode != "square":
            extra["frame_region"] = torch.tensor(region, dtype=torch.long)
        if self.mixture is not None:
            extra["source"] = self.mixture.names[self.mixture.source_of(source)]
        return {
            "frames": frames,
            "frame_mask": frame_mask,
            "frame_times": frame_times,
            "input_ids": torch.tensor(text.input_ids, dtype=torch.long),
            "labels": labels,
            "text_len": text.text_len,
            **extra,
            "index": index,
            "skip_reason": skip_reason,
            "path": row.path,
            "caption": self.rows[source].caption,
        }

    def _canvas(self, clip: DecodedClip | None, device: torch.device) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The (F, H, W, 3) frames the clip is placed in, and where (top, left, height, width).

        ``square``: the clip fills the frame_size square. ``keep_aspect``: the picture centred in
        it, the bars in ``pad_colour``. ``max_pixels``: the frames are the picture's own size (the
        collate pads a batch to its largest). A slot without a clip gets an empty square.
        """
        size = self.settings.video.frame_size
        height, width = (size, size) if clip is None else tuple(clip.frames.shape[1:3])
        if self.resize.mode == "max_pixels" and clip is not None:
            canvas, region = (height, width), (0, 0, height, width)
        else:
            canvas, region = (size, size), ((size - height) // 2, (size - width) // 2, height, width)
        shape = (self.settings.video.max_frames, *canvas, 3)
        if self.resize.mode == "keep_aspect":
            return self.pad_colour.to(device).expand(shape).clone(), region
        return torch.zeros(shape, dtype=torch.uint8, device=device), region
