"""The text SmolVLM2 and InternVL3 wrap a video's frames in, as their processors write it
(``replace_video_token``). SmolVLM2's: an introduction naming the frame count in words and the
video's length, then each frame as one image after ``Frame from mm:ss:``. InternVL3's: each frame
as one image after ``FrameN:``, one a line; a picture: its image alone (SmolVLM2's: its tiles).

The text goes into the conversation where the chat template rendered the video item, and the
whole context is tokenized as one string (``PretrainedVLM.spliced``), as the processor does:
its words merge with their neighbours (``User: You`` is ``User``, ``:``, `` You``).

SmolVLM2's times are the frames' real display times (InternVL3 is told none). The length is the
last frame's time: what the processor writes when the video's metadata carry no duration, and
what kvideo's clip (whose times start at 0) really spans.
"""

from __future__ import annotations

from datetime import timedelta

from num2words import num2words

from kvideo.data.picture_tiles import FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN, IMAGE_TOKEN


def smolvlm_video_text(times: list[float], tokens_per_frame: int) -> str:
    """The text standing for a clip whose frames are shown at ``times`` (seconds), each frame
    ``tokens_per_frame`` image tokens."""
    times = times or [0.0]
    length = timedelta(seconds=int(times[-1]))
    text = "You are provided the following series of "
    text += f"{num2words(len(times))} frames from a {length} [H:MM:SS] video.\n"
    image = f"{FAKE_IMAGE_TOKEN}{GLOBAL_IMAGE_TOKEN}{IMAGE_TOKEN * tokens_per_frame}{FAKE_IMAGE_TOKEN}"
    for t in times:
        text += f"\nFrame from {int(t // 60):02d}:{int(t % 60):02d}:{image}"
    return text + "\n\n"


# InternVL3's image markers (its tokenizer's start_image_token, context_image_token, end_image_token)
START_IMAGE_TOKEN = "<img>"
CONTEXT_IMAGE_TOKEN = "<IMG_CONTEXT>"
END_IMAGE_TOKEN = "</img>"


def internvl_image_text(tokens_per_tile: int, tiles: int = 1) -> str:
    """The text standing for a picture of ``tiles`` tiles (InternVL3's ``replace_image_token``)."""
    return f"{START_IMAGE_TOKEN}{CONTEXT_IMAGE_TOKEN * tokens_per_tile * tiles}{END_IMAGE_TOKEN}"


def internvl_video_text(count: int, tokens_per_frame: int) -> str:
    """The text standing for a clip of ``count`` frames, each frame ``tokens_per_frame`` image
    tokens."""
    image = f"{START_IMAGE_TOKEN}{CONTEXT_IMAGE_TOKEN * tokens_per_frame}{END_IMAGE_TOKEN}"
    return "\n".join(f"Frame{i + 1}: {image}" for i in range(max(1, count)))
