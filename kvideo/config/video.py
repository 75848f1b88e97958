"""``VideoConfig``: where the videos are and how frames are sampled from them.

Fields, defaults and messages follow the seed project's ``VideoConfig`` exactly
(``tests/unit/test_config.py`` pins the defaults), so configs written for it keep
working and its error messages stay familiar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvideo.config.checks import require_at_most, require_choice
from kvideo.registry import DATASETS, SAMPLING_POLICIES
from kvideo.resize import RESIZE_MODES

VIDEO_SPLITS = ("train", "validation")

# Frames are resized to a square of this side. 4096 covers 4K video (3840 x 2160) without
# upscaling; one such frame is 48 MiB as uint8 and 192 MiB as float32, so a default batch
# (16 clips x 8 frames) is already 24 GiB of normalized frames. Past it there is no source
# resolution to gain and no machine that holds a batch: 65536 was OOM-killed at 22.5 GB.
MAX_FRAME_SIZE = 4096
# Frames per clip: 8192 is 68 minutes at 2 fps (Molmo2's rate), far past what video LMs train
# on; every frame is padded to this count and sizes the frame-position table.
MAX_FRAMES = 8192


@dataclass
class VideoConfig:
    """Video dataset location and frame-sampling knobs.

    data_root: Root directory of the on-disk video dataset.
    dataset_type: Registry key for the dataset builder (``"webvid"`` default).
    dataset_name: On-disk corpus name within a style (e.g. ``"webvid-10M"``).
    sampling_policy: Registry key for the frame-sampling policy (``"uniform"``).
    split: Which split to read (``"train"`` or ``"validation"``): the split training runs on
        (validation always reads ``"validation"``) and the one ``kvideo.validate`` scans.
    max_samples: Cap the manifest to this many examples (``0`` = all).
    val_max_samples: The same cap for the validation split that training validates on (``0`` = all).
    max_frames: Maximum frames sampled per clip (the per-clip budget).
    min_frames: Minimum frames sampled per clip; short clips pad up to this.
    fps: Target sampling rate in frames per second (Molmo2 uses 2).
    frame_size: Square pixel size each frame is resized to.
    prompt: Optional instruction prepended to the target text, masked from loss.
    resize: How frames are sized (``kvideo.resize``): ``square`` (squashed to
        ``frame_size``, the seed's behaviour), ``keep_aspect`` (long side ``frame_size``, padded to
        the square, padding left out of the visual tokens) or ``max_pixels`` (Qwen2-VL's dynamic
        resolution, ``model=hf_vlm`` only: aspect kept, area <= ``max_pixels``, variable tokens).
    max_pixels: The area bound of ``resize=max_pixels`` (0 = ``frame_size^2``).
    """

    data_root: str = ""
    dataset_type: str = "webvid"
    dataset_name: str = "webvid-10M"
    sampling_policy: str = "uniform"
    split: str = "train"
    max_samples: int = 0
    val_max_samples: int = 0
    max_frames: int = 16
    min_frames: int = 4
    fps: float = 2.0
    frame_size: int = 224
    prompt: str = ""
    resize: str = "square"
    max_pixels: int = 0

    def __post_init__(self) -> None:
        datasets = DATASETS.names()  # entry-point metadata: no plugin module is imported
        if self.dataset_type not in datasets:
            raise ValueError(f"video.dataset_type must be one of {datasets} (got {self.dataset_type!r})")
        policies = SAMPLING_POLICIES.names()
        if self.sampling_policy not in policies:
            raise ValueError(
                f"video.sampling_policy must be one of {policies} (got {self.sampling_policy!r})"
            )
        if self.split not in VIDEO_SPLITS:
            raise ValueError(f"video.split must be one of {VIDEO_SPLITS} (got {self.split!r})")
        if self.max_samples < 0:
            raise ValueError(f"video.max_samples must be non-negative (got {self.max_samples})")
        if self.val_max_samples < 0:
            raise ValueError(f"video.val_max_samples must be non-negative (got {self.val_max_samples})")
        if self.min_frames < 1:
            raise ValueError(f"video.min_frames must be >= 1 (got {self.min_frames})")
        if self.max_frames < 1:
            raise ValueError(f"video.max_frames must be >= 1 (got {self.max_frames})")
        if self.min_frames > self.max_frames:
            raise ValueError(
                f"video.min_frames ({self.min_frames}) must be <= video.max_frames ({self.max_frames})"
            )
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"video.fps must be positive (got {self.fps})")
        if self.frame_size <= 0:
            raise ValueError(f"video.frame_size must be positive (got {self.frame_size})")
        require_at_most(
            "video.frame_size",
            self.frame_size,
            MAX_FRAME_SIZE,
            "frames are resized to this square side; 4096 covers 4K video (3840 x 2160), "
            "and one 4096 px frame is already 48 MiB as uint8, 192 MiB as float32",
        )
        require_choice("video.resize", self.resize, RESIZE_MODES)
        if self.max_pixels < 0:
            raise ValueError(f"video.max_pixels must be non-negative (got {self.max_pixels})")
        require_at_most(
            "video.max_pixels",
            self.max_pixels,
            MAX_FRAME_SIZE * MAX_FRAME_SIZE,
            "the area of a 4096 px square frame (see video.frame_size)",
        )
        require_at_most(
            "video.max_frames",
            self.max_frames,
            MAX_FRAMES,
            "8192 frames is 68 minutes at 2 fps; every clip is padded to this many frames",
        )
