"""A model folder's chat template is a program: one that would render for hours is refused in
one line once it passes the bound (``kvideo.time_limit``), and start-up goes no further."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvideo.data import hf_tokenizers
from kvideo.data.hf_tokenizers import ChatTokenizer
from kvideo.time_limit import TimeLimitExceeded, time_limit
from tests.helpers.hf_models import save_tokenizer

# 10^10 iterations: transformers' sandbox bounds each range(), not their product
NESTED_LOOPS = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
)


def test_a_step_past_its_limit_is_stopped() -> None:
    start = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match="too slow"), time_limit(0.2, "too slow"):
        while True:
            pass
    assert time.monotonic() - start < 5
    with time_limit(5, "unused"):  # a quick step is untouched, and the timer is disarmed after
        pass
    time.sleep(0.01)


def test_a_chat_template_that_renders_for_ever_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tokenizer(tmp_path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path)
    tok.chat_template = NESTED_LOOPS
    tok.save_pretrained(tmp_path)
    monkeypatch.setattr(hf_tokenizers, "TEMPLATE_SECONDS", 0.5)
    chat = ChatTokenizer(str(tmp_path))
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"model\.lm_path: the chat template of .* ran for more than 0\.5 s"):
        chat.context_ids("Describe the video.")
    assert time.monotonic() - start < 10
