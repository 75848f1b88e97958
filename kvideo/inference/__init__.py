"""A trained run, used: restore it from a checkpoint, caption clips, export it to Hugging Face
format, evaluate it on a split. ``kvideo.caption``, ``kvideo.export`` and ``eval.py`` are the
command lines over these."""

from kvideo.model.generate import caption_batch
from kvideo.train.restore import TrainedModel, find_checkpoint, load_trained

__all__ = ["TrainedModel", "caption_batch", "find_checkpoint", "load_trained"]
