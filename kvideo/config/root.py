"""The whole experiment config and the one validator that every entry path (Python,
``@hydra.main``, multirun callbacks) goes through. Pure data and rules: nothing here reads a
file, a cache or the machine (``kvideo.preflight`` does, after this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kvideo.config.checks import require_caption_room, require_token_budget
from kvideo.config.data import DataConfig, is_url
from kvideo.config.decoder import DecoderConfig
from kvideo.config.keys import refuse_unknown_keys
from kvideo.config.model import ModelConfig
from kvideo.config.trainer import TrainerConfig
from kvideo.config.video import VideoConfig


@dataclass
class KVideoConfig:
    """Root of the composed config: one node per module boundary."""

    video: VideoConfig = field(default_factory=VideoConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        check_cross_fields(self)


def check_cross_fields(cfg: KVideoConfig) -> None:
    """Rules that span two nodes; messages show the arithmetic so the fix is obvious.

    Pure: what needs a model folder (a pretrained tower's grid, the LM's context length, a
    ``max_pixels`` frame's tokens) is checked by the pre-flight step (``kvideo.preflight``)."""
    video, model = cfg.video, cfg.model
    if cfg.data.mixture and video.data_root:
        raise ValueError(
            f"video.data_root={video.data_root!r} given beside data.mixture: a mixture names each "
            "source's data_root; drop video.data_root or data.mixture"
        )
    roots = [video.data_root] + [source.data_root for source in cfg.data.mixture]
    if any(is_url(root) for root in roots) and cfg.data.remote_retry_s >= cfg.decoder.timeout_s:
        raise ValueError(
            f"data.remote_retry_s ({cfg.data.remote_retry_s:g}) must be below decoder.timeout_s "
            f"({cfg.decoder.timeout_s:g}): a read still retrying would be taken for a hung decode"
        )
    if video.resize == "max_pixels" and cfg.trainer.strategy == "fsdp":
        raise ValueError(
            "video.resize=max_pixels with trainer.strategy=fsdp: each clip shape is its own tower "
            "forward, so ranks would run different numbers of sharded forwards (a collective each) "
            "and hang; use trainer.strategy=ddp or video.resize=keep_aspect"
        )
    if video.resize == "max_pixels" and not model.hub_model:
        raise ValueError(
            "video.resize=max_pixels needs model=hf_vlm or model=pretrained (a tower that reads any "
            "frame size); the builtin models take video.resize=square or keep_aspect"
        )
    if model.pretrained_model and video.resize == "keep_aspect":
        raise ValueError(
            "video.resize=keep_aspect pads frames, and model=pretrained would see the padding as "
            "picture; use video.resize=max_pixels (the model's own rule: aspect kept, no padding) "
            "or square"
        )
    if model.hub_model:
        return  # the folders' geometry and the LM's own tokenizer are read by kvideo.preflight
    require_token_budget(
        video.max_frames,
        model.tokens_per_frame,
        model.max_text_len,
        model.max_seq_len,
        visuals=cfg.data.max_visuals,
    )
    if not cfg.data.tokenizer:  # byte-level: the count needs no file (a tokenizer.json is checked on load)
        require_caption_room(1 + len(video.prompt.encode("utf-8")), model.max_text_len, "byte-level")
    if video.frame_size % model.patch_size:
        raise ValueError(
            f"video.frame_size ({video.frame_size}) must be a multiple of model.patch_size "
            f"({model.patch_size})"
        )
    grid = video.frame_size // model.patch_size
    if model.tokens_per_frame > grid * grid:
        raise ValueError(
            f"model.tokens_per_frame ({model.tokens_per_frame}) cannot exceed the patch grid "
            f"(video.frame_size / model.patch_size)^2 = ({video.frame_size} / {model.patch_size})^2 "
            f"= {grid * grid}"
        )


def config_from(cfg: DictConfig | dict[str, Any]) -> KVideoConfig:
    """Convert a composed config into dataclasses, which runs every ``__post_init__``.

    OmegaConf merges do not call ``__post_init__``, so nothing composed by Hydra is
    checked until this runs; the entry points call it, then ``kvideo.preflight.preflight``,
    before doing any work. Only the schema's nodes are converted (``hydra`` and extras are
    ignored); a key inside them that the schema lacks is refused (``kvideo.config.keys``). Reads
    no file: what the folders and the machine say is the pre-flight step's.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    schema = OmegaConf.structured(KVideoConfig)
    keys = [k for k in schema.keys() if k in cfg]
    ours = OmegaConf.masked_copy(cfg, keys)
    refuse_unknown_keys(ours, KVideoConfig)  # the merge below would drop them without a word
    merged = OmegaConf.merge(schema, ours)
    # to_object instantiates a structured node's dataclass; its stubs only say "some container".
    return cast(KVideoConfig, OmegaConf.to_object(merged))


def launcher_fields(cfg: DictConfig) -> dict[str, Any]:
    """``hydra.launcher``'s keys that say which machine's memory the run must fit in, for the
    pre-flight memory check (all None without a hydra node)."""
    fields: dict[str, Any] = {}
    for key in ("_target_", "mem_gb", "tasks_per_node", "gpus_per_node"):
        try:
            fields[key] = OmegaConf.select(cfg, f"hydra.launcher.{key}", default=None)
        except OmegaConfBaseException:  # an interpolation that only a running Hydra resolves
            fields[key] = None
    return fields
