"""The whole experiment config, its ConfigStore registration, and the one validator
that every entry path (Python, ``@hydra.main``, multirun callbacks) goes through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kvideo.config.checks import require_caption_room
from kvideo.config.data import DataConfig
from kvideo.config.decoder import DecoderConfig
from kvideo.config.frames import max_tokens_per_frame
from kvideo.config.memory import check_fits_where_it_runs
from kvideo.config.model import ModelConfig
from kvideo.config.pretrained import (
    image_statistics,
    lm_context_length,
    resolve_model_folder,
    tower_geometry,
)
from kvideo.config.slurm_job import cpus_per_task, mem_gb_per_node, tasks_per_node
from kvideo.config.trainer import TrainerConfig
from kvideo.config.video import VideoConfig

SCHEMA_NAME = "kvideo_schema"


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
    """Rules that span two nodes; messages show the arithmetic so the fix is obvious."""
    video, model = cfg.video, cfg.model
    context = model.max_seq_len
    context_name = "model.max_seq_len"
    if video.resize == "max_pixels" and cfg.trainer.strategy == "fsdp":
        raise ValueError(
            "video.resize=max_pixels with trainer.strategy=fsdp: each clip shape is its own tower "
            "forward, so ranks would run different numbers of sharded forwards (a collective each) "
            "and hang; use trainer.strategy=ddp or video.resize=keep_aspect"
        )
    if video.resize == "max_pixels" and model.family != "hf":
        raise ValueError(
            "video.resize=max_pixels needs model=hf_vlm (a tower that reads any frame size); "
            "the builtin models take video.resize=square or keep_aspect"
        )
    if model.family == "hf":
        context, context_name = check_pretrained_parts(cfg)
    per_frame = max_tokens_per_frame(video, model)
    visual = video.max_frames * per_frame
    total = visual + model.max_text_len
    if total > context:
        per_frame_name = (
            "model.tokens_per_frame"
            if video.resize != "max_pixels"
            else "(most tokens of a video.max_pixels frame)"
        )
        raise ValueError(
            f"token budget exceeded: video.max_frames * {per_frame_name} + model.max_text_len "
            f"= {video.max_frames} * {per_frame} + {model.max_text_len} = {total} "
            f"> {context_name} ({context})"
        )
    if model.family == "hf":
        return  # the LM's own tokenizer counts the prompt, at trainer start
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


def check_pretrained_parts(cfg: KVideoConfig) -> tuple[int, str]:
    """The Hugging Face folders exist and fit the video settings; returns the sequence limit
    (the smaller of ``model.max_seq_len`` and the LM's ``max_position_embeddings``) and its name."""
    video, model = cfg.video, cfg.model
    vision = resolve_model_folder("model.vision_path", model.vision_path)
    lm = resolve_model_folder("model.lm_path", model.lm_path)
    tower = tower_geometry("model.vision_path", vision)
    image_statistics("model.vision_path", vision)
    if video.frame_size != tower.image_size:
        raise ValueError(
            f"video.frame_size ({video.frame_size}) must equal the vision tower's image_size "
            f"({tower.image_size}, from model.vision_path's config.json): frames are decoded at the "
            f"size the tower was trained on; set video.frame_size={tower.image_size}"
        )
    if model.tokens_per_frame > tower.grid**2:
        raise ValueError(
            f"model.tokens_per_frame ({model.tokens_per_frame}) cannot exceed the tower's patch grid "
            f"(image_size / patch_size)^2 = ({tower.image_size} / {tower.patch_size})^2 = {tower.grid**2}"
        )
    if not -tower.depth - 1 <= model.vision_feature_layer <= tower.depth:
        raise ValueError(
            f"model.vision_feature_layer ({model.vision_feature_layer}) is outside the tower's "
            f"{tower.depth + 1} hidden states (embeddings + {tower.depth} layers)"
        )
    positions = lm_context_length("model.lm_path", lm)
    if positions < model.max_seq_len:
        return positions, "the LM's max_position_embeddings"
    return model.max_seq_len, "model.max_seq_len"


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can list it first in its defaults,
    and the resolvers the config tree uses (here, not in ``__main__``: submitit
    pickles configs into jobs that must be able to resolve them)."""
    from kvideo.config.evaluation import EVAL_SCHEMA_NAME, EvalConfig

    cs = ConfigStore.instance()
    cs.store(name=SCHEMA_NAME, node=KVideoConfig)
    cs.store(name=EVAL_SCHEMA_NAME, node=EvalConfig)
    resolvers: dict[str, Callable[..., int]] = {
        "kvideo.tasks_per_node": tasks_per_node,
        "kvideo.cpus_per_task": cpus_per_task,
        "kvideo.mem_gb_per_node": mem_gb_per_node,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def to_validated(cfg: DictConfig | dict[str, Any], *, check_memory: bool = True) -> KVideoConfig:
    """Convert a composed config into dataclasses, which runs every ``__post_init__``.

    OmegaConf merges do not call ``__post_init__``, so nothing composed by Hydra is
    validated until this runs; the launcher calls it before doing any work.
    Only the schema's nodes are converted (``hydra`` and extras are ignored, but for the
    launcher keys that say which machine's memory the run must fit in). Then, unless
    ``check_memory=False`` (tools that read the config but do not train, e.g. a dataset scan),
    the memory estimate (``kvideo.config.memory``): frames and model against that machine.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    schema = OmegaConf.structured(KVideoConfig)
    keys = [k for k in schema.keys() if k in cfg]
    merged = OmegaConf.merge(schema, OmegaConf.masked_copy(cfg, keys))
    # to_object instantiates a structured node's dataclass; its stubs only say "some container".
    validated = cast(KVideoConfig, OmegaConf.to_object(merged))
    if check_memory:
        check_fits_where_it_runs(validated, launcher_fields(cfg))
    return validated


def launcher_fields(cfg: DictConfig) -> dict[str, Any]:
    """``hydra.launcher``'s keys the memory check needs (all None without a hydra node)."""
    fields: dict[str, Any] = {}
    for key in ("_target_", "mem_gb", "tasks_per_node", "gpus_per_node"):
        try:
            fields[key] = OmegaConf.select(cfg, f"hydra.launcher.{key}", default=None)
        except OmegaConfBaseException:  # an interpolation that only a running Hydra resolves
            fields[key] = None
    return fields
