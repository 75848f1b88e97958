"""The text SmolVLM2 wraps a video's frames in, as its processor writes it
(``SmolVLMProcessor.replace_video_token``): an introduction naming the frame count in words and
the video's length, then each frame as one image after ``Frame from mm:ss:``.

The text goes into the conversation where the chat template rendered the video item, and the
whole context is tokenized as one string (``PretrainedVLM.spliced``), as the processor does:
its words merge with their neighbours (``User: You`` is ``User``, ``:``, `` You``).

The times are the frames' real display times. The length is the last frame's time: what the
processor writes when the video's metadata carry no duration, and what kvideo's clip (whose
times start at 0) really spans.
"""

from __future__ import annotations

from datetime import timedelta

from num2words import num2words

# SmolVLM2's image markers (its tokenizer's fake_image_token, global_image_token, image_token)
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
IMAGE_TOKEN = "<image>"


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
