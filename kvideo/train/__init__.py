"""The trainer: optimisation, AMP, DDP, checkpoint/resume and metrics around the VLM.

``train(cfg, run_dir)`` is the entry point (``train.py`` calls it with Hydra's output dir).
Importing this package imports torch; the config path never does.
"""

from kvideo.train.run import train
from kvideo.train.signals import EXIT_PREEMPTED, request_checkpoint_and_exit

__all__ = ["EXIT_PREEMPTED", "request_checkpoint_and_exit", "train"]
