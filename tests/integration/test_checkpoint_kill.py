"""SIGKILL at random moments while checkpoints are being written, 20 times: every restart
resumes from the last *complete* checkpoint and never reads a partial file.

Each round forks a writer (from a forkserver that preloaded torch, so a round starts in
milliseconds and no OpenMP state is inherited from the test process) that resumes with
``load_latest`` and then saves checkpoints in a tight loop through the real
``save_checkpoint``; every tensor of step ``s`` holds the value ``s``, so a checkpoint that
mixes two steps or lost data is visible. The writer reports each step through a pipe *after*
``save_checkpoint`` returns. The parent kills it after a random delay (0.02-0.5 s; one save
of the 8 MB state takes ~0.1 s here, so most kills land mid-write) and checks the state on
disk: ``last.pt`` reads directly (no fallback), holds the last acknowledged step or the one
after it (killed between the rename and the acknowledgement), and is internally consistent.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import struct
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.train.checkpoint import (
    LAST_NAME,
    TMP_NAME,
    list_step_checkpoints,
    load_latest,
    read_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.slow  # kills checkpoint writes dozens of times

ROUNDS = 20
NUMEL = 2_000_000  # 8 MB of float32: a save (write + fsync + step copy) takes tens of ms


def make_state(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "model": {"w": torch.full((NUMEL,), float(step)), "b": torch.full((7,), float(step))},
        "optimizer": {"state": {0: {"exp_avg": torch.full((1000,), float(step))}}, "param_groups": []},
        "scheduler": {"last_epoch": step},
        "data": {"epoch": 0, "samples_in_epoch": 4 * step, "world_size": 1},
        "ranks": [{"skipped": {"empty": step}}],
    }


def check_consistent(state: dict[str, Any]) -> int:
    """The step a checkpoint claims, after checking every field agrees with it."""
    step = int(state["step"])
    w = state["model"]["w"]
    assert w.numel() == NUMEL and float(w.min()) == float(w.max()) == step
    assert torch.equal(state["model"]["b"], torch.full((7,), float(step)))
    assert float(state["optimizer"]["state"][0]["exp_avg"].sum()) == 1000.0 * step
    assert state["scheduler"]["last_epoch"] == step
    assert state["data"]["samples_in_epoch"] == 4 * step
    assert state["ranks"][0]["skipped"] == {"empty": step}
    return step


def writer(ckpt_dir: str, conn: Connection) -> None:
    """Child: resume like a restarted run, then checkpoint steps forever (until SIGKILLed)."""
    torch.set_num_threads(1)
    found = load_latest(Path(ckpt_dir))
    step = 0 if found is None else check_consistent(found[0])
    conn.send_bytes(struct.pack("<q", -1 - step))  # "resumed at step" (negative: not a save)
    while True:
        step += 1
        save_checkpoint(Path(ckpt_dir), make_state(step), keep=2)
        conn.send_bytes(struct.pack("<q", step))  # acknowledged only once save_checkpoint returned


def drain(conn: Connection) -> list[int]:
    out = []
    while conn.poll():
        try:
            out.append(struct.unpack("<q", conn.recv_bytes())[0])
        except EOFError:
            break
    return out


@pytest.fixture(scope="module")
def ctx():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "kvideo.train.checkpoint", __name__])
    return ctx


def test_sigkill_during_checkpoint_writes_never_loses_a_complete_checkpoint(ctx, tmp_path: Path) -> None:
    rng = random.Random(1234)
    ckpt_dir = tmp_path / "checkpoints"
    acked = 0  # the newest step whose save_checkpoint returned
    on_disk = 0  # the step last.pt held after the previous round
    torn = 0  # rounds whose kill left a half-written temp file behind
    for round_no in range(ROUNDS):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=writer, args=(str(ckpt_dir), child), daemon=True)
        proc.start()
        child.close()
        assert parent.poll(30), "writer did not start"
        resumed = -1 - struct.unpack("<q", parent.recv_bytes())[0]
        assert resumed == on_disk, f"round {round_no}: resumed at {resumed}, last complete was {on_disk}"
        acked = resumed  # complete by definition (it was just loaded); this round counts from here
        time.sleep(rng.uniform(0.02, 0.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        acks = drain(parent)
        parent.close()
        if acks:
            acked = acks[-1]
        torn += (ckpt_dir / TMP_NAME).exists()

        if acked == 0 and not (ckpt_dir / LAST_NAME).exists():
            continue  # killed before the very first save completed: a fresh start is correct
        state = read_checkpoint(ckpt_dir / LAST_NAME)  # last.pt itself, no fallback: never partial
        step = check_consistent(state)
        assert step in (acked, acked + 1), f"round {round_no}: last.pt at {step}, acknowledged {acked}"
        assert step >= on_disk
        latest = load_latest(ckpt_dir)
        assert latest is not None and latest[1].name == LAST_NAME and latest[0]["step"] == step
        for _, path in list_step_checkpoints(ckpt_dir):  # the step_*.pt copies are whole too
            check_consistent(read_checkpoint(path))
        on_disk = step
    assert on_disk >= ROUNDS // 2, "too few checkpoints completed to mean anything"
    assert torn >= ROUNDS // 4, f"only {torn} kills landed mid-write"
