"""Datasets, the embedded sample corpus, tokenizers and per-sample assembly.

Deliberately empty: config validation imports ``kvideo.data.datasets`` (to fill the
dataset registry) and must not pay for torch/av/decord imports on the way.
"""
