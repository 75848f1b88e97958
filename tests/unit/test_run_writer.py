"""``kvideo.train.metrics.RunWriter``: the metrics files of a run, truncated on resume."""

from __future__ import annotations

from pathlib import Path

from kvideo.train.metrics import RunWriter, read_jsonl


def test_run_writer_truncates_on_resume_and_keeps_skip_dedupe(tmp_path: Path) -> None:
    w = RunWriter(tmp_path, enabled=True)
    for step in range(1, 8):
        w.log({"step": step, "loss": 1.0 / step, "skipped": {"missing": step}}, tb_prefix="train")
    w.log({"split": "validation", "step": 6, "val_loss": 0.5}, tb_prefix="val")
    assert w.add_skipped([("/a.mp4", "missing"), ("/b.mp4", "empty"), ("/a.mp4", "missing")]) == 2
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # torn by a kill

    w = RunWriter(tmp_path, enabled=True, resume_step=5)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert w.add_skipped([("/a.mp4", "missing"), ("/c.mp4", "unreadable")]) == 1
    w.log({"step": 6, "loss": 0.1}, tb_prefix="train")
    w.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["path"] for r in read_jsonl(tmp_path / "skipped.jsonl")] == ["/a.mp4", "/b.mp4", "/c.mp4"]

    off = RunWriter(tmp_path / "other_rank", enabled=False)
    off.log({"step": 1}, tb_prefix="train")
    off.add_skipped([("/x", "missing")])
    assert not (tmp_path / "other_rank").exists()
