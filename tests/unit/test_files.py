"""``kvideo.files``: JSONL records as a killed run leaves them, and writes that never go
through a symbolic link planted in a run dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvideo.files import (
    open_append,
    open_new,
    planted_link,
    read_jsonl,
    read_plain_yaml,
    refuse_planted_link,
    write_text_atomic,
)


def test_a_torn_last_line_is_left_out_and_a_bad_line_before_it_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')  # killed mid-write
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON record"):
        read_jsonl(path)


def test_kvideo_never_writes_through_a_link(tmp_path: Path) -> None:
    """A temporary or a rewritten file replaces a link planted at its name; an appended file
    refuses it; the link's target is never touched."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for name in ("out.txt", "out.txt.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_text_atomic(tmp_path / "out.txt", "mine\n")  # its .tmp was a link too
    assert (tmp_path / "out.txt").read_text() == "mine\n" and not (tmp_path / "out.txt").is_symlink()
    (tmp_path / "log.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match=r"log\.jsonl is a symbolic link; kvideo does not write through links"):
        open_append(tmp_path / "log.jsonl")
    with open_new(tmp_path / "log.jsonl") as handle:
        handle.write("{}\n")
    assert victim.read_text() == "precious\n"


def test_a_planted_link_is_found_and_wandbs_own_are_not(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "wandb").mkdir()
    (run / "wandb" / "latest-run").symlink_to(run / "checkpoints")
    (run / "wandb" / "offline-run-1" / "logs").mkdir(parents=True)  # wandb's service log, in its cache
    (run / "wandb" / "offline-run-1" / "logs" / "debug-core.log").symlink_to(tmp_path / "core.log")
    assert planted_link(run) is None
    (run / "checkpoints" / "ckpt.tmp").symlink_to(tmp_path / "victim")
    assert planted_link(run) == run / "checkpoints" / "ckpt.tmp"
    with pytest.raises(ValueError, match=r"run dir .*: checkpoints/ckpt\.tmp is a symbolic link \(to "):
        refuse_planted_link(run, "run dir")
    (tmp_path / "scratch" / "checkpoints").mkdir(parents=True)
    linked_run = tmp_path / "linked"
    linked_run.symlink_to(tmp_path / "scratch", target_is_directory=True)
    assert planted_link(linked_run) is None  # the run dir itself may be a link


def test_a_run_config_with_aliases_or_of_any_size_is_refused_at_once(tmp_path: Path) -> None:
    """A "billion laughs": nine levels of ten aliases each would expand to 10^9 strings."""
    laughs = ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        laughs.append(f"{level}: &{level} [{', '.join(['*' + previous] * 10)}]")
    bomb = tmp_path / "config.yaml"
    bomb.write_text("\n".join(laughs) + "\n")
    with pytest.raises(ValueError, match=r"config\.yaml: holds YAML anchors or aliases"):
        read_plain_yaml(bomb)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (5 << 20))
    with pytest.raises(ValueError, match=r"big\.yaml: 5242880 bytes, not a config kvideo wrote"):
        read_plain_yaml(big)
    plain = tmp_path / "plain.yaml"
    plain.write_text("video:\n  fps: 2.0\n  prompt: ''\n")
    assert read_plain_yaml(plain) == {"video": {"fps": 2.0, "prompt": ""}}
