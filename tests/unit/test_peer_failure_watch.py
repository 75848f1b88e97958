"""``PeerFailureWatch``: a rank blocked where no error reaches it (an NCCL collective waiting
for a dead peer) still ends soon after another rank announces its failure."""

from __future__ import annotations

import multiprocessing as mp
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from kvideo.train.distributed import DistEnv
from kvideo.train.failure import EXIT_PEER_FAILED, PeerFailureWatch
from tests.helpers.ranks import free_port


def _env(rank: int) -> DistEnv:
    return DistEnv(rank, rank, 2, torch.device("cpu"), rank == 0, "gloo", False)


def _blocked_rank(port: int, stop_first: bool) -> None:
    store = dist.TCPStore(  # type: ignore[attr-defined]  # not in the stubs
        "127.0.0.1", port, is_master=False, timeout=timedelta(seconds=30)
    )
    watch = PeerFailureWatch(_env(1), store=store, grace_s=1.0, poll_s=0.1)
    if stop_first:
        watch.stop()
    time.sleep(60)  # blocked for good, as in a collective whose peer is gone


def _run_blocked_rank(stop_first: bool) -> tuple[int | None, float]:
    port = free_port()
    store = dist.TCPStore(  # type: ignore[attr-defined]  # not in the stubs
        "127.0.0.1", port, is_master=True, timeout=timedelta(seconds=30)
    )
    child = mp.get_context("fork").Process(target=_blocked_rank, args=(port, stop_first))
    child.start()
    time.sleep(0.5)
    started = time.monotonic()
    failing = PeerFailureWatch(_env(0), store=store, grace_s=30.0, poll_s=30.0)
    failing.announce("RuntimeError: lost the GPU")
    failing.stop()  # this process is the test's: its own watch must not end it
    child.join(timeout=10)
    took = time.monotonic() - started
    if child.is_alive():
        child.kill()
        child.join()
    return child.exitcode, took


def test_a_blocked_rank_ends_within_the_grace_after_another_announces_a_failure() -> None:
    exitcode, took = _run_blocked_rank(stop_first=False)
    assert exitcode == EXIT_PEER_FAILED
    assert took < 5  # grace 1 s, polls every 0.1 s


def test_a_rank_that_stopped_its_watch_is_not_ended_by_it() -> None:
    exitcode, _ = _run_blocked_rank(stop_first=True)
    assert exitcode != EXIT_PEER_FAILED  # still asleep after 10 s: killed by the test (-9)


def test_the_first_announced_failure_is_the_one_every_rank_reads() -> None:
    store = dist.HashStore()  # type: ignore[attr-defined]
    first = PeerFailureWatch(_env(1), store=store, poll_s=60.0)
    second = PeerFailureWatch(_env(0), store=store, poll_s=60.0)
    first.announce("ValueError: bad clip")
    second.announce("RuntimeError: connection closed by peer")
    assert first.failure() == second.failure() == "rank 1: ValueError: bad clip"
    first.stop()
    second.stop()
