"""bf16 training steps at realistic shapes, with CPU decode workers and with ``nvdec``.

Three models, each trained by kvideo's own ``train`` (composed as ``train.py`` composes it) on
the benchmark corpus, once with ``pyav_cpu`` in ``trainer.num_workers`` workers and once with
``video/decoder=nvdec``:

* ``default``: the builtin model as ``python train.py`` builds it;
* ``hf_vlm``: a SigLIP-base tower (224 px, 16 px patches, 12 x 768) and a Qwen2-0.5B LM
  (24 x 896, 14 heads over 2 key/value heads, 151,936 tokens), random weights;
* ``pretrained``: a Qwen2.5-VL-3B (36 x 2048 LM, 32 x 1280 tower), random weights.

The two Hugging Face models train LoRA (rank 16) on their LM beside the projector, as a
finetune of that size does, which also keeps each run's final checkpoint small (a full 3B
optimizer state is 36 GB to write). Per run, from its ``metrics.jsonl`` windows after the first
(start-up and the first decode without prefetch are not the steady state): step time, tokens/s,
the data-wait share, model FLOPs utilisation (``4 * parameters * tokens/s / PEAK_BF16_FLOPS``: the
forward and the activation gradients through every weight; the weight gradients of the few
trainable ones and attention's own FLOPs are left out, so it is a lower bound) and the peak
device memory.

``smoke``: the same code on CPU with tiny shapes, fp32 and a few steps (``gpu_check --smoke``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

PEAK_BF16_FLOPS = 989e12  # H100 / H200 SXM, dense bf16
STEPS, LOG_EVERY = 12, 4
SMOKE_STEPS, SMOKE_LOG_EVERY = 4, 2


def save_hf_parts(root: Path, *, smoke: bool) -> tuple[Path, Path]:
    """SigLIP-base and Qwen2-0.5B shapes (tiny ones for ``smoke``), random weights."""
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from tests.helpers.hf_models import save_tokenizer

    size = 64 if smoke else 224
    tower = (32, 1, 2) if smoke else (768, 12, 12)  # width, layers, heads
    vision = SiglipVisionConfig(
        hidden_size=tower[0],
        intermediate_size=4 * tower[0],
        num_hidden_layers=tower[1],
        num_attention_heads=tower[2],
        image_size=size,
        patch_size=16,
    )
    SiglipVisionModel(vision).save_pretrained(root / "tower")
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(root / "tower")
    vocab = save_tokenizer(root / "lm")
    lm = (64, 128, 2, 4) if smoke else (896, 4864, 24, 14)  # width, feed-forward, layers, heads
    config = Qwen2Config(
        vocab_size=vocab if smoke else 151_936,
        hidden_size=lm[0],
        intermediate_size=lm[1],
        num_hidden_layers=lm[2],
        num_attention_heads=lm[3],
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )
    lm_model: Any = Qwen2ForCausalLM(config)
    lm_model.to(dtype=torch.bfloat16).save_pretrained(root / "lm")
    return root / "tower", root / "lm"


def save_qwen2_5_vl_3b(folder: Path, *, smoke: bool) -> Path:
    """Qwen2.5-VL-3B's shapes (a tiny Qwen2.5-VL for ``smoke``), random weights, bf16."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from tests.helpers.pretrained_vlms import (
        QWEN_TEMPLATE,
        QWEN_VISION_TOKENS,
        _family_tokenizer,
        save_tiny_qwen_vl,
    )

    if smoke:
        return save_tiny_qwen_vl(folder)
    tokenizer = _family_tokenizer(folder, QWEN_VISION_TOKENS, QWEN_TEMPLATE)
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in QWEN_VISION_TOKENS}
    text = {
        "vocab_size": 151_936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "rope_theta": 1e6,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=True,
        video_token_id=ids["<|video_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.device("cuda"):
        model: Any = Qwen2_5_VLForConditionalGeneration(config)
    model.to(dtype=torch.bfloat16)
    model.save_pretrained(folder)
    Qwen2VLImageProcessorPil().save_pretrained(folder)
    return folder


def model_overrides(name: str, root: Path, *, smoke: bool) -> list[str]:
    """``train.py`` overrides of one model (its folders written under ``root``)."""
    if name == "default":
        return []
    if name == "hf_vlm":
        tower, lm = save_hf_parts(root / "hf_parts", smoke=smoke)
        size = 64 if smoke else 224
        parts = [f"model.vision_path={tower}", f"model.lm_path={lm}", f"video.frame_size={size}"]
        return ["model=hf_vlm", *parts, "model.lora_rank=16"]
    folder = save_qwen2_5_vl_3b(root / "qwen2_5_vl", smoke=smoke)
    size = 56 if smoke else 224
    return ["model=pretrained", f"model.path={folder}", f"video.frame_size={size}", "model.lora_rank=16"]


def steady(run_dir: Path) -> dict[str, Any]:
    """The windows after the first, averaged, and the run's parameter count."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in rows if "split" not in r and "tokens_per_s" in r][1:] or rows[-1:]
    final = json.loads((run_dir / "final.json").read_text())

    def mean(key: str) -> float:
        return sum(float(w[key]) for w in windows) / len(windows)

    tokens_per_s = mean("tokens_per_s")
    return {
        "tokens_per_s": tokens_per_s,
        "clips_per_s": mean("clips_per_s"),
        "data_wait_share": mean("data_wait_share"),
        "num_params": final.get("num_params"),
        "mfu": 4 * float(final.get("num_params") or 0) * tokens_per_s / PEAK_BF16_FLOPS,
        "status": final.get("status"),
    }


def train_once(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One run of kvideo's ``train`` as ``train.py`` composes it; its steady numbers."""
    from kvideo.config.compose import compose_config
    from kvideo.preflight import checked
    from kvideo.train import train

    cfg = checked(compose_config(overrides), memory=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(cfg, run_dir)
    result = steady(run_dir)
    batch = cfg.trainer.batch_size
    result["step_s"] = batch / result["clips_per_s"] if result["clips_per_s"] else None
    result["peak_device_memory_mib"] = (
        torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    )
    return result


def check_training(manifest: Path, root: Path, *, smoke: bool, workers: int) -> dict[str, Any]:
    """Every model with each decoder (see the module docstring)."""
    steps, log_every = (SMOKE_STEPS, SMOKE_LOG_EVERY) if smoke else (STEPS, LOG_EVERY)
    common = [
        "video/dataset=manifest",
        f"video.data_root={manifest}",
        f"trainer.max_steps={steps}",
        f"trainer.log_every={log_every}",
        "trainer.val_every=0",
        f"trainer.ckpt_every={10 * steps}",
        "trainer.export_at_end=false",
        f"trainer.device={'cpu' if smoke else 'cuda'}",
        f"trainer.precision={'fp32' if smoke else 'bf16'}",
    ]
    if smoke:
        common += ["video.max_frames=4", "trainer.batch_size=2"]
    runs: dict[str, Any] = {}
    for name in ("default", "hf_vlm", "pretrained"):
        model = model_overrides(name, root, smoke=smoke)
        runs[name] = {}
        for decoder, extra in (
            ("pyav_cpu", [f"trainer.num_workers={workers}"]),
            ("nvdec", ["trainer.num_workers=0"]),
        ):
            run_dir = root / "runs" / f"{name}_{decoder}"
            try:
                runs[name][decoder] = train_once(
                    [*common, *model, f"video/decoder={decoder}", *extra], run_dir
                )
            except Exception as e:  # a failure is a result, and the other runs still go
                runs[name][decoder] = {"error": f"{type(e).__name__}: {e}"}
    return runs
