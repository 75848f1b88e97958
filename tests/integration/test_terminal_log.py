"""On a terminal the progress goes to a tqdm bar; ``train.log`` must still hold what a pipe would
show (``tail -f train.log`` from another shell), and the first log line must not share a line
with the bar. The run's stdout here is a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.helpers.configs import tiny_cli_run
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow  # trains a model


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """``python train.py ARGS`` with its stdout and stderr on a pseudo-terminal; (exit code, what
    the terminal showed)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args], cwd=cwd, stdout=child, stderr=child, close_fds=True
    )
    os.close(child)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return proc.wait(timeout=300), shown.decode("utf-8", errors="replace")


def test_train_log_holds_the_steps_and_validations_a_terminal_shows_in_its_bar(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        *tiny_cli_run(tmp_path / "corpus", run),
        "trainer.max_steps=4",
        "trainer.log_every=1",
        "trainer.val_every=2",
    ]
    code, shown = _run_on_a_terminal(args, tmp_path)
    assert code == 0, shown[-3000:]
    assert "train: " in shown and "4/4" in shown  # the bar was on the terminal
    assert re.search(r"validating \d+/\d+ clips", shown)  # and it moved while validating
    log = (run / "train.log").read_text()
    for step in range(1, 5):
        assert f"step {step}/4 epoch" in log, log
    assert "validation step 2: loss" in log and "validation step 4: loss" in log
    assert "parameters, " in log and " trainable" in log  # not "training N params"
    start = next(line for line in shown.splitlines() if "training on" in line)
    assert "it/s" not in start and "%|" not in start  # the bar starts on its own line
