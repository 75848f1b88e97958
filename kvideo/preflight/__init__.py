"""The pre-flight step: what a checked config means on this machine and with these folders.

``kvideo.config`` is pure data and rules. What needs a file, a cache or the machine is checked
here, once, by every entry point before any work (``train.py``, its ``--cfg`` and ``--info``
paths, each multirun point before the launcher starts, ``eval.py`` and the tools):

* ``model=hf_vlm``: the tower and LM folders (local or in the Hugging Face cache, never
  downloaded) and their geometry against ``video.*`` and ``model.*`` (``pretrained``);
* ``model=pretrained``: the VLM folder, its weight format and its frame rule (``pretrained_model``);
* the memory estimate against the machine (cgroup, ``/proc/meminfo``) or the SLURM job's
  ``mem_gb`` (``memory``);
* ``trainer.init_from`` names something that exists (its content is read when the run starts);
* the sample corpus's ``video.data_root`` is a folder, not a manifest meant for another dataset.

``frames`` is the frame geometry the decoders size frames by, which for a pretrained tower is
the tower's own patch grid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kvideo.config.root import KVideoConfig, config_from, launcher_fields
from kvideo.preflight.memory import check_fits_where_it_runs
from kvideo.preflight.pretrained import check_pretrained_parts
from kvideo.preflight.pretrained_model import check_pretrained_model


def preflight(cfg: KVideoConfig, launcher: Mapping[str, Any] | None = None, *, memory: bool = True) -> None:
    """Raise ``ValueError`` (one line naming the key to change) when the config cannot run here.

    launcher: ``kvideo.config.launcher_fields`` of the composed config, which say where the run
        will execute (a SLURM job's ``mem_gb`` rather than this login node's memory).
    memory: ``False`` for work that does not train (a dataset scan, an export, an evaluation of a
        trained run, whose memory is the trained run's).
    """
    if cfg.model.pretrained_parts:
        check_pretrained_parts(cfg)
    if cfg.model.pretrained_model:
        check_pretrained_model(cfg)
    check_sample_root(cfg.video.dataset_type, cfg.video.data_root, "video.data_root")
    for source in cfg.data.mixture:
        check_sample_root(
            source.dataset_type, source.data_root, f"data.mixture source {source.name!r}: data_root"
        )
    if cfg.trainer.init_from and not os.path.exists(os.path.expanduser(cfg.trainer.init_from)):
        raise ValueError(
            f"trainer.init_from={cfg.trainer.init_from!r}: no such run dir, checkpoint or export"
        )
    if memory:
        check_fits_where_it_runs(cfg, dict(launcher or {}))


# What a file of clips or records is called; the sample corpus's root is a folder it generates into.
LISTING_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".tar", ".parquet", ".yaml")


def check_sample_root(dataset_type: str, data_root: str, field: str) -> None:
    """Refuse a ``data_root`` that names a file (or looks like one) with the ``sample`` dataset:
    the user forgot ``video/dataset=manifest``, and the synthetic corpus would be generated under
    ``x.jsonl/raw/`` and trained on, exit 0. ``field`` names where the root was given."""
    if dataset_type != "sample" or not data_root:
        return
    root = Path(data_root).expanduser()
    if root.is_file() or root.suffix.lower() in LISTING_SUFFIXES:
        raise ValueError(
            f"{field}={data_root!r} names a file, but dataset_type=sample "
            "generates its synthetic corpus into a folder there; for your own clips choose their "
            "dataset: video/dataset=manifest (a JSONL or CSV of clips), conversations, webvid or "
            "webdataset"
        )


def checked(composed: DictConfig, *, memory: bool = True) -> KVideoConfig:
    """What every entry point runs on a composed config before any work: ``config_from`` (the
    schema's rules), then ``preflight`` on the machine the composed launcher says it runs on."""
    cfg = config_from(composed)
    preflight(cfg, launcher_fields(composed), memory=memory)
    return cfg
