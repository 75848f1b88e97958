"""``load_trained(CKPT_OR_RUN_DIR)``: the model of a run, as it was at a checkpoint, with the run's
own config (``<run_dir>/config.yaml``), tokenizer and preprocessing.

A checkpoint holds what trained (``kvideo.train.checkpointer``): the rest is rebuilt exactly as
the run built it, from the same config (pretrained folders, or the seeded initialisation of a
builtin model), and the trained weights are loaded over it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kvideo.config import KVideoConfig, config_from
from kvideo.config.keys import drop_unknown_keys, with_keys_moved
from kvideo.data.tokenizer import Tokenizer, build_tokenizer
from kvideo.files import read_plain_yaml
from kvideo.preflight import preflight
from kvideo.train.checkpoint import checkpoint_dir, read_checkpoint
from kvideo.train.checkpoint_dcp import METADATA_NAME, Found, newest_checkpoint, read_trainer_state
from kvideo.train.checkpoint_states import load_dcp_weights, load_trained_weights
from kvideo.train.distributed import resolve_device
from kvideo.train.freeze import TrainableSchedule
from kvideo.train.metrics import CONFIG_NAME

if TYPE_CHECKING:
    from kvideo.model.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A restored run: its checked config, model (eval mode, on ``device``) and tokenizer."""

    cfg: KVideoConfig
    model: nn.Module
    tokenizer: Tokenizer
    device: torch.device
    step: int
    run_dir: Path
    checkpoint: Path

    @property
    def spec(self) -> ModelSpec:
        """The model family's spec (its ``generate``, ``export``, ...)."""
        from kvideo.model.spec import model_spec

        return model_spec(self.cfg.model.family)


def find_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """``(run_dir, checkpoint)`` for a run dir (its newest usable checkpoint: ``None`` here,
    chosen on load), a checkpoint file (``<run_dir>/checkpoints/*.pt``) or a DCP checkpoint's
    folder (``<run_dir>/checkpoints/step_*.dcp``)."""
    target = Path(path).expanduser()
    if target.is_dir() and not (target / METADATA_NAME).is_file():
        if not (target / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{target} is not a kvideo run dir: it has no {CONFIG_NAME}")
        return target, None
    if target.exists():
        run_dir = target.parent.parent
        if not (run_dir / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{target}: expected it in <run_dir>/checkpoints/ beside <run_dir>/{CONFIG_NAME}"
            )
        return run_dir, target
    raise FileNotFoundError(f"{target}: no such run dir or checkpoint file")


_ABSENT = object()  # OmegaConf.select's default: a key that is not there (None is a value)


def run_config(run_dir: Path, updates: Mapping[str, Any] | None = None) -> KVideoConfig:
    """The run's own config with ``updates`` (``{"video.max_frames": 16}``) applied and checked."""
    saved = read_plain_yaml(run_dir / CONFIG_NAME)
    if not isinstance(saved, dict):
        raise ValueError(f"{run_dir / CONFIG_NAME} is not a kvideo config (not a mapping)")
    cfg = OmegaConf.create(with_keys_moved(saved))
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{run_dir / CONFIG_NAME} is not a kvideo config (not a mapping)")
    for key, value in (updates or {}).items():
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ValueError(f"{key}: the run's config ({run_dir / CONFIG_NAME}) has no such key")
        OmegaConf.update(cfg, key, value, merge=False)
    dropped = drop_unknown_keys(cfg, KVideoConfig)
    if dropped:
        log.warning("%s: %s are not settings of this kvideo version; ignored", run_dir / CONFIG_NAME, dropped)
    checked = config_from(cfg)
    preflight(checked, memory=False)  # the trained run's memory was checked when it trained
    return checked


def checkpoint_of(run_dir: Path, file: Path | None) -> Found:
    """The checkpoint ``find_checkpoint`` named: ``file``, or the run dir's newest."""
    if file is None:
        newest = newest_checkpoint(checkpoint_dir(run_dir))
        if newest is None:
            raise FileNotFoundError(f"{run_dir} has no checkpoint yet ({checkpoint_dir(run_dir)} is empty)")
        return newest
    if file.is_dir():
        return Found(file, read_trainer_state(file))
    return Found(file, read_checkpoint(file, map_location="cpu"))


def load_trained(
    path: str | Path, *, updates: Mapping[str, Any] | None = None, device: str | None = None
) -> TrainedModel:
    """Rebuild the run's model and load the checkpoint's weights (see the module docstring).

    ``updates``: changes to the run's config (``run_config``); ``device``: ``cpu``, ``cuda`` or
    ``auto``, default the run's ``trainer.device``.
    """
    from kvideo.model.spec import build_model, model_spec

    run_dir, file = find_checkpoint(path)
    cfg = run_config(run_dir, updates)
    # The model is built as it trained: its frame-position table has the run's video.max_frames
    # rows, and fewer frames per clip (video.max_frames=4 on a run trained at 8) use its first ones.
    as_trained = run_config(run_dir)
    if cfg.video.max_frames > as_trained.video.max_frames:
        raise ValueError(
            f"video.max_frames={cfg.video.max_frames} > the {as_trained.video.max_frames} frames this run "
            "trained with: its frame positions stop there"
        )
    found = checkpoint_of(run_dir, file)
    torch.manual_seed(cfg.trainer.seed)  # a builtin model's frozen weights are its seeded init
    tokenizer = build_tokenizer(cfg.data, cfg.model)
    model = build_model(
        cfg.model,
        vocab_size=tokenizer.vocab_size,
        max_frames=as_trained.video.max_frames,
        frame_size=as_trained.video.frame_size,
        resize=cfg.video.resize,
    )
    spec = model_spec(cfg.model.family)
    trained = spec.checkpoint_keys(model, TrainableSchedule(model, cfg.model, part_of=spec.part_of).ever())
    if found.dcp:
        load_dcp_weights(model, found.path, trained)
    else:
        load_trained_weights(model, found.state["model"], trained, found.path)
    target = resolve_device(device or cfg.trainer.device)
    return TrainedModel(
        cfg=cfg,
        model=model.to(target).eval(),
        tokenizer=tokenizer,
        device=target,
        step=found.step,
        run_dir=run_dir,
        checkpoint=found.path,
    )


def autocast_for(trained: TrainedModel) -> Any:
    """The run's autocast (bf16 on a GPU that has it, else fp32), as a context factory."""
    from kvideo.train.precision import Autocast

    return Autocast(trained.cfg.trainer.precision, trained.device)


def export_trained(trained: TrainedModel, out_dir: Path, *, merge_lora: bool = False) -> dict[str, Any]:
    """``export_model`` for a restored run (``python -m kvideo.export``)."""
    from kvideo.model.export import export_model
    from kvideo.model.spec import model_spec

    return export_model(
        trained.model,
        trained.cfg,
        trained.tokenizer,
        out_dir,
        step=trained.step,
        trained=TrainableSchedule(
            trained.model, trained.cfg.model, part_of=model_spec(trained.cfg.model.family).part_of
        ).ever(),
        merge_lora=merge_lora,
    )
