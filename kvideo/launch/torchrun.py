"""``kvideo-torchrun``: ``torchrun`` whose exit code tells the scheduler a preemption.

A preempted kvideo rank checkpoints and exits 75 (``EXIT_PREEMPTED``), the code a SLURM batch
script (or submitit) reads to requeue the job. Under ``torchrun`` that code never reached the
scheduler: the elastic agent reports any non-zero worker exit as ``ChildFailedError`` and exits 1,
so a preempted job looked failed and was not requeued. This runs torchrun itself
(``torch.distributed.run``, every argument unchanged) and exits 75 when the failure the agent
reports first, the root cause, is a rank's exit 75; any other failure stays torchrun's own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from kvideo.train.signals import EXIT_PREEMPTED


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(list(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        if first.exitcode == EXIT_PREEMPTED:
            print(
                f"kvideo-torchrun: rank {rank} was preempted and checkpointed: exit {EXIT_PREEMPTED} "
                "(requeue and the run resumes)",
                file=sys.stderr,
            )
            return EXIT_PREEMPTED
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
