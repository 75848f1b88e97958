"""One manifest row -> one fixed-shape training sample; a bad video never raises. A row naming a
picture (``kvideo.decode.image.is_image``) is a one-frame clip at time 0. A record with several
visuals (``ClipRow.more_visuals``) is one sample of several clips, skipped whole when one of them
does not decode.

The dataset knows captions and rows, the decoder knows video files, the sampler knows
timestamps: this module only wires them together, pads to ``max_frames`` and turns
decode failures into counted, masked (or replaced) samples.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from kvideo.data.picture_tiles import PictureTiles
from kvideo.data.rows import ClipRow, video_source
from kvideo.data.sharding import ShardLayout
from kvideo.data.tokenizer import IGNORE_INDEX, encode_row
from kvideo.decode import build_decoder
from kvideo.decode.errors import DecodeError
from kvideo.decode.image import decode_image, is_image
from kvideo.decode.types import ClipMeta, DecodedClip, VideoDecoder, VideoSource
from kvideo.sampling import timestamps

if TYPE_CHECKING:
    from kvideo.data.mixture import MixtureLayout
    from kvideo.data.settings import ClipSettings
    from kvideo.data.watchdog import InFlight

# The threads of the decoder.streams pool (each holds a decoder of its own).
STREAM_THREADS = "kvideo-decode"
_POOL_LOCK = threading.Lock()
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

    When some row holds several visuals, every item has ``visual_slots`` K (the most any row
    holds) clips of ``max_frames`` slots: ``frames`` (K * F, ...), ``frame_mask`` / ``frame_times``
    (K * F,), ``visual_at`` long (K,) (a row's unused slots at the text's end, no frame kept:
    ``kvideo.model.sequence``) and ``frame_region`` (K, 4). With ``settings.marks_pictures``, where
    some row names a picture, items also carry ``picture`` bool (per slot): which clips are
    pictures (a released VLM reads them through its image route, ``kvideo.model.pretrained_vlm``);
    with ``settings.picture_tiling`` a picture's slots hold its image processor's tiles, cut from
    its own size, and ``picture_size`` long (per slot, 2) its size as decoded (``PictureTiles``).

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
        self._decoders: dict[int, VideoDecoder] = {}  # per thread of _decoder_pid
        self._decoder_pid = -1
        self._streams: ThreadPoolExecutor | None = None
        # Tokenize once: texts never change, and workers inherit the result.
        self._text = [encode_row(tokenizer, row, video.prompt, settings.max_text_len) for row in rows]
        self._token_costs: list[int] | None = None
        self.conversational = tokenizer.captions_as_conversations or any(row.turns for row in rows)
        self.visual_slots = max((row.visuals for row in rows), default=1)
        self.marks_pictures = settings.marks_pictures and any(
            is_image(path) for row in rows for path in (row.path, *row.more_visuals)
        )
        self.tiling = settings.picture_tiling if self.marks_pictures else None
        if self.tiling is not None:  # refused now, not at the first picture
            self.tiling.check_slots()
        self.resize = settings.resize
        # keep_aspect pads with the vision part's mean colour (LLaVA's pad), which normalizes to ~0.
        mean = settings.statistics[0]
        self.pad_colour = torch.tensor([round(255 * m) for m in mean], dtype=torch.uint8)

    def token_costs(self) -> list[int]:
        """Each sample's tokens for ``data.batch_tokens`` (``kvideo.data.token_batches``), known
        before decoding: with ``data.packing`` its text before padding plus the most visual
        tokens its frames (or a tiled picture's tiles, ``PictureTiling.most_tokens``) can give (an
        upper bound); without, the padded length the model computes for every sample."""
        if self._token_costs is None:
            settings = self.settings
            frames = settings.visual_tokens
            picture = frames if self.tiling is None else max(frames, self.tiling.most_tokens())
            if settings.data.packing:
                self._token_costs = [
                    sum(picture if is_image(path) else frames for path in (row.path, *row.more_visuals))
                    + text.text_len
                    for row, text in zip(self.rows, self._text, strict=True)
                ]
            else:
                padded = settings.padded_tokens + self.visual_slots * picture - frames
                self._token_costs = [padded] * len(self._text)
        return self._token_costs

    def set_epoch(self, epoch: int) -> None:
        """Epoch keys the random_segment jitter so each epoch sees different frames."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def decoder(self) -> VideoDecoder:
        """The decoder this thread uses. Built per process (decoder objects own threads, which do
        not survive fork): one for the process, and one for each thread of the ``decoder.streams``
        pool (each stream decodes with its own; the pool lives as long as the dataset, so they
        are bounded, whereas prefetch threads come and go with every epoch)."""
        if self._decoder_pid != os.getpid():
            self._decoders, self._decoder_pid, self._streams = {}, os.getpid(), None
        thread = threading.current_thread()
        key = (thread.ident or 0) if thread.name.startswith(STREAM_THREADS) else 0
        if key not in self._decoders:
            self._decoders[key] = build_decoder(self.settings.decoder, local_rank=self.local_rank)
        return self._decoders[key]

    def __getstate__(self) -> dict[str, Any]:
        """A copy for a spawned worker builds its own decoders (and thread pool) there."""
        state = self.__dict__.copy()
        state.update(_decoders={}, _decoder_pid=-1, _streams=None)
        return state

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's items (the DataLoader asks for them together): with ``decoder.streams`` > 1
        and a decoder in this process (a GPU one), decoded ``streams`` at a time on threads of
        their own, in order; otherwise one after the other, as ``__getitem__`` gives them."""
        streams = self.settings.decoder.streams
        if streams == 1 or not self.settings.decoder.decodes_on_gpu or len(indices) == 1:
            return [self[i] for i in indices]
        with _POOL_LOCK:  # the next epoch's prefetch thread may be here too
            if self._decoder_pid != os.getpid() or self._streams is None:
                self.decoder  # noqa: B018 (resets what a forked copy inherited)
                self._streams = ThreadPoolExecutor(streams, thread_name_prefix=STREAM_THREADS)
            pool = self._streams
        return list(pool.map(self.__getitem__, indices))

    def _decode(self, index: int) -> list[DecodedClip]:
        """Row ``index``'s clips, in placeholder order; the first that fails raises."""
        row = self.rows[index]
        for path in (row.path, *row.more_visuals):
            if path in self.blocklist:
                raise DecodeError("blocklisted", path)
        if index in self.crashed:
            raise DecodeError("worker_crash", row.path, "its decode killed two DataLoader workers")
        if self.in_flight is not None:
            self.in_flight.mark(index)
        first = self._decode_visual(index, video_source(row, retry_s=self.settings.data.remote_retry_s), row)
        clips = [first, *(self._decode_visual(index, path) for path in row.more_visuals)]
        return clips if self.tiling is None else self._tiled(clips, (row.path, *row.more_visuals))

    def _decode_visual(self, index: int, source: VideoSource, row: ClipRow | None = None) -> DecodedClip:
        """One clip or picture of row ``index`` (``row``: the row's own segment applies)."""
        size = self.settings.video.frame_size if self.resize.mode == "square" else self.resize
        if is_image(source if isinstance(source, str) else source.name):  # one frame at time 0
            return decode_image(source, None if self.tiling else size)  # tiles: from its own size
        return self.decoder.decode(
            source,
            partial(sample_timestamps, self.spec, self.epoch, index),
            size=size,
            start=None if row is None else row.start,
            end=None if row is None else row.end,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        skip_reason, source, failed = "", index, row.path
        try:
            clip = self._decode(index)
        except DecodeError as err:  # named by the visual that failed (a record may hold several)
            skip_reason, clip, failed = err.reason, None, err.path
            if self.settings.data.bad_sample_policy == "replace":
                clip, source = self._replacement(index)
        finally:
            if self.in_flight is not None:
                self.in_flight.clear()
        return self._assemble(index, source, row, clip, skip_reason, failed)

    def _replacement(self, index: int) -> tuple[list[DecodedClip] | None, int]:
        """The next decodable row after ``index`` (deterministic, so resume-safe)."""
        for step in range(1, min(MAX_REPLACEMENT_TRIES, len(self.rows)) + 1):
            candidate = (index + step) % len(self.rows)
            try:
                return self._decode(candidate), candidate
            except DecodeError:
                continue
        return None, index

    def _assemble(
        self,
        index: int,
        source: int,
        row: ClipRow,
        clips: list[DecodedClip] | None,
        skip_reason: str,
        path: str,
    ) -> dict[str, Any]:
        """The item of row ``index`` (``path``: the visual a skip names)."""
        text = self._text[source]
        labels = torch.tensor(text.labels, dtype=torch.long)
        if clips is None:
            labels.fill_(IGNORE_INDEX)  # nothing to learn from a slot without frames
        visuals = (self.rows[source].path, *self.rows[source].more_visuals)
        extra: dict[str, Any] = {}
        if self.tiling is not None:
            sizes = [clip.picture_size if isinstance(clip, PictureTiles) else (0, 0) for clip in clips or []]
            size = torch.tensor(sizes + [(0, 0)] * (self.visual_slots - len(sizes)), dtype=torch.long)
            extra["picture_size"] = size[0] if self.visual_slots == 1 else size
        frames, frame_mask, frame_times, regions = self._visual_frames(clips or [])
        if self.conversational:
            places = text.every_visual_at
            places += (len(text.input_ids),) * (self.visual_slots - len(places))  # unused: at the end
            visual_at = places[0] if self.visual_slots == 1 else torch.tensor(places, dtype=torch.long)
            extra.update(visual_at=visual_at, answer_at=text.answer_at)
        if self.resize.mode != "square":
            region = torch.tensor(regions, dtype=torch.long)
            extra["frame_region"] = region[0] if self.visual_slots == 1 else region
        if self.marks_pictures:  # which clips are pictures: a released VLM's image route reads them
            picture = torch.tensor(
                [is_image(path) for path in visuals] + [False] * (self.visual_slots - len(visuals))
            )
            extra["picture"] = picture[0] if self.visual_slots == 1 else picture
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
            "path": path if skip_reason else row.path,
            "caption": self.rows[source].caption,
        }

    def _tiled(self, clips: list[DecodedClip], visuals: tuple[str, ...]) -> list[DecodedClip]:
        """A record's clips with its pictures as their tiles (``settings.picture_tiling``); a
        picture its image processor cannot cut is ``unreadable``, as one Pillow cannot read."""
        at = [k for k, path in enumerate(visuals) if is_image(path)]
        if not at or self.tiling is None:
            return clips
        try:
            tiles = self.tiling.tiles([clips[k].frames[0] for k in at])
        except (ValueError, TypeError, OSError) as e:  # what transformers' image processors raise
            raise DecodeError("unreadable", visuals[at[0]], f"its image processor: {e}") from None
        tiled = list(clips)
        for k, picture in zip(at, tiles, strict=True):
            size = (int(clips[k].frames.shape[1]), int(clips[k].frames.shape[2]))
            tiled[k] = PictureTiles(picture, [0.0] * len(picture), clips[k].meta, picture_size=size)
        return tiled

    def _visual_frames(
        self, clips: list[DecodedClip]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, ...]]]:
        """``(frames, frame_mask, frame_times, regions)`` of ``visual_slots`` clips of
        ``max_frames`` slots, ``clips`` in the first ones (``_canvas``; with ``max_pixels`` every
        clip's canvas is the largest one's, an unused slot's too)."""
        max_frames = self.settings.video.max_frames
        device = next((clip.frames.device for clip in clips), torch.device("cpu"))
        placed = [self._canvas(clip, device) for clip in clips]
        if self.resize.mode == "max_pixels" and len(placed) > 1:
            height = max(canvas.shape[1] for canvas, _ in placed)
            width = max(canvas.shape[2] for canvas, _ in placed)
            pad = [(0, 0, 0, width - c.shape[2], 0, height - c.shape[1]) for c, _ in placed]
            placed = [(torch.nn.functional.pad(c, p), r) for (c, r), p in zip(placed, pad, strict=True)]
        while len(placed) < self.visual_slots:
            if placed and self.resize.mode == "max_pixels":
                empty = torch.zeros_like(placed[0][0])
                placed.append((empty, (0, 0, *empty.shape[1:3])))
            else:
                placed.append(self._canvas(None, device))
        frames = torch.cat([canvas for canvas, _ in placed])
        frame_mask = torch.zeros(len(frames), dtype=torch.bool)
        frame_times = torch.full((len(frames),), -1.0)
        for k, (clip, (_, (top, left, h, w))) in enumerate(zip(clips, placed, strict=False)):
            n, first = min(len(clip.times), max_frames), k * max_frames
            frames[first : first + n, top : top + h, left : left + w] = clip.frames[:n]
            frame_mask[first : first + n] = True
            frame_times[first : first + n] = torch.tensor(clip.times[:n])
        return frames, frame_mask, frame_times, [region for _, region in placed]

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
