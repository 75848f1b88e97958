"""Pictures as one-frame clips: what an image-caption record or an image in a conversation is to the
models, its one frame shown at time 0.

Decoded with Pillow, the maintained library every Hugging Face image processor reads with: the
camera's EXIF orientation applied (as a viewer shows the picture), converted to RGB (a palette,
greyscale or RGBA picture alike), resized by ``video.resize``'s rule exactly as a video frame of
that size would be (``kvideo.resize``; Pillow's bilinear filter, which antialiases when it
shrinks). A picture that cannot be used is a ``DecodeError`` with the reason a video would get:
``missing`` / ``not_a_file`` / ``permission`` / ``empty`` from the same file checks,
``unreadable`` for bytes that are no picture Pillow knows (or one over its pixel limit, a
decompression bomb), ``decode_error`` for a picture cut short.
"""

from __future__ import annotations

import io
import os

from kvideo.decode.checks import check_video_source
from kvideo.decode.errors import DecodeError
from kvideo.decode.types import ClipMeta, DecodedClip, VideoSource
from kvideo.resize import Resize, as_resize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_META = ClipMeta(duration=0.0, native_fps=0.0, num_frames=1)


def is_image(path: str) -> bool:
    """Whether ``path`` (a file, or a shard member ``<shard>#<key>.<ext>``) names a picture."""
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def decode_image(source: VideoSource, size: int | Resize | None) -> DecodedClip:
    """The picture as a one-frame clip, uint8 (1, H, W, 3) at time 0 (rules in the module
    docstring); ``size`` as a video decoder's (an int is a square, ``None`` the native size)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_video_source(source)
    name = source if isinstance(source, str) else source.name
    opened = source if isinstance(source, str) else io.BytesIO(source.data)
    try:
        with Image.open(opened) as picture:
            rgb = ImageOps.exif_transpose(picture).convert("RGB")
    except UnidentifiedImageError:
        raise DecodeError("unreadable", name, "not a picture Pillow reads") from None
    except Image.DecompressionBombError as e:
        raise DecodeError("unreadable", name, str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:  # "image file is truncated", a broken chunk
        raise DecodeError("decode_error", name, f"{type(e).__name__}: {e}") from None
    rule = as_resize(size)
    if rule is not None:
        height, width = rule.output_size(*rgb.size)
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    frames = torch.from_numpy(np.asarray(rgb).copy()).unsqueeze(0)
    return DecodedClip(frames, [0.0], IMAGE_META)
