"""``kvideo.files``: JSONL records as a killed run leaves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvideo.files import read_jsonl


def test_a_torn_last_line_is_left_out_and_a_bad_line_before_it_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')  # killed mid-write
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON record"):
        read_jsonl(path)
