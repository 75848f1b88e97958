"""kvideo's benchmark suite: decode, DataLoader throughput and data-wait share of a train step.

Run everything with ``python -m benchmarks.run_all`` (results land in ``benchmarks/results/``),
or one benchmark with ``python -m benchmarks.decode [--quick]`` and friends. The video corpus
is generated deterministically on first use and cached in ``benchmarks/.corpus/``.
"""
