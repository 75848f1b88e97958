"""What this process may use of the machine."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: the scheduler's affinity mask (a SLURM allocation of 2
    CPUs on a 64-core node is 2), not ``os.cpu_count()``, which reports the whole node."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
