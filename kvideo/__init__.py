"""kvideo: a Hydra-structured launcher for training video-language models."""

__version__ = "0.1.0"
