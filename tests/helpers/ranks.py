"""Run a function on N gloo ranks in forked processes, as torchrun would start them."""

from __future__ import annotations

import faulthandler
import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

# A rank still running after this many seconds is taken as hung: every rank's stack goes to
# stderr and the rank exits, so the test fails with where each rank was instead of hanging CI.
RANK_DEADLINE_S = float(os.environ.get("KVIDEO_TEST_RANK_DEADLINE_S", "600"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_ranks(worker: Callable[..., None], world_size: int, *args: Any) -> None:
    """``worker(rank, *args)`` in ``world_size`` processes with torchrun's variables set (so
    ``init_distributed`` forms their group); returns when all have, raises if one failed.

    Forked: the children inherit the imported torch instead of importing it again, and the
    arguments need not pickle. One thread per rank: two ranks on two cores, and no oversubscribed
    OpenMP pool making a run ten times slower.
    """
    mp.start_processes(  # type: ignore[attr-defined]  # exported at run time, not in the stubs
        _rank_main,
        args=(worker, world_size, free_port(), args),
        nprocs=world_size,
        join=True,
        start_method="fork",
    )


def _rank_main(
    rank: int, worker: Callable[..., None], world_size: int, port: int, args: tuple[Any, ...]
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    faulthandler.dump_traceback_later(RANK_DEADLINE_S, exit=True)  # all threads, then exit 1
    try:
        worker(rank, *args)
    finally:
        faulthandler.cancel_dump_traceback_later()


def start_ranks(worker: Callable[..., None], world_size: int, *args: Any) -> list[Any]:
    """``run_ranks`` without the waiting, and without ending the others when one fails (as
    ``run_ranks`` does): for tests of what the ranks do by themselves when one fails. The caller
    joins the processes."""
    ctx = mp.get_context("fork")
    port = free_port()
    processes = [
        ctx.Process(target=_rank_main, args=(rank, worker, world_size, port, args))
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    return processes
