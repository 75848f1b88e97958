"""Tiny configs that train in seconds on 2 cores, shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvideo.config import DataConfig, KVideoConfig, ModelConfig, TrainerConfig, VideoConfig

MAX_STEPS = 12

# The same tiny model through the CLI: 32 px frames, 4 frames, 2x2 tokens, width 32, on the CPU.
TINY_CLI_OVERRIDES = [
    "video.frame_size=32",
    "video.max_frames=4",
    "video.min_frames=2",
    "model.tokens_per_frame=4",
    "model.vision_width=32",
    "model.vision_heads=2",
    "model.lm_width=32",
    "model.lm_heads=2",
    "trainer.device=cpu",
    "trainer.num_workers=0",
    "trainer.batch_size=2",
]


def tiny_cli_run(corpus: Path, run_dir: Path, *, train_clips: int = 16, val_clips: int = 4) -> list[str]:
    """``train.py`` overrides for the tiny model on a sample corpus of ``train_clips`` /
    ``val_clips`` clips in ``corpus``, writing to ``run_dir``; tests add what they are about."""
    return [
        f"video.data_root={corpus}",
        f"data.sample_train_clips={train_clips}",
        f"data.sample_val_clips={val_clips}",
        *TINY_CLI_OVERRIDES,
        f"hydra.run.dir={run_dir}",
    ]


def tiny_model(**fields: Any) -> ModelConfig:
    """A builtin model 32 wide (one ViT block, 2 heads, 2x2 tokens per frame, a 64-token LM
    window) that runs in milliseconds; ``fields`` set what a test is about (patch size, LM depth,
    text length) or override these."""
    base: dict[str, Any] = dict(
        vision_width=32,
        vision_depth=1,
        vision_heads=2,
        tokens_per_frame=4,
        lm_width=32,
        lm_heads=2,
        max_seq_len=64,
    )
    return ModelConfig(**{**base, **fields})


def tiny_config(data_root: Path, *, prompt: str = "", **trainer: Any) -> KVideoConfig:
    """~60k parameters, 4 frames of 32x32, 24 training clips (6 steps per epoch at 2x2 clips)."""
    options: dict[str, Any] = dict(
        max_steps=MAX_STEPS,
        batch_size=2,
        grad_accum=2,
        lr=2e-3,
        warmup_steps=2,
        log_every=1,
        ckpt_every=3,
        val_every=6,
        val_max_batches=1,
        num_workers=0,
        device="cpu",
        seed=3,
    )
    options.update(trainer)
    return KVideoConfig(
        video=VideoConfig(
            data_root=str(data_root),
            dataset_type="sample",
            dataset_name="sample",
            frame_size=32,
            max_frames=4,
            min_frames=2,
            fps=2.0,
            prompt=prompt,
        ),
        data=DataConfig(sample_train_clips=24, sample_val_clips=8),
        model=tiny_model(patch_size=16, lm_depth=1, max_text_len=40, dropout=0.1),
        trainer=TrainerConfig(**options),
    )


def tiny_hf_model(vision: Path, lm: Path, **fields: Any) -> ModelConfig:
    """``model=hf_vlm`` on the tiny Hugging Face parts (a 64 px tower): 4 tokens a frame, time
    embeddings; ``fields`` set any other key."""
    options: dict[str, Any] = {
        "name": "hf_vlm",
        "family": "hf",
        "vision_path": str(vision),
        "lm_path": str(lm),
        "tokens_per_frame": 4,
        "time_embedding": True,
        "max_seq_len": 512,
    }
    return ModelConfig(**{**options, **fields})


def tiny_hf_config(
    data_root: Path, vision: Path, lm: Path, *, model: dict[str, Any] | None = None, **trainer: Any
) -> KVideoConfig:
    """``tiny_config`` with ``model=hf_vlm`` on the tiny Hugging Face parts (64 px tower)."""
    cfg = tiny_config(data_root, prompt="Describe the video.", **trainer)
    cfg.video.frame_size = 64
    cfg.model = tiny_hf_model(vision, lm, **{"max_text_len": 40, "freeze": ["vision"], **(model or {})})
    return cfg
