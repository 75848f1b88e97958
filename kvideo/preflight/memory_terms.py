"""The memory estimate's terms: what frames, activations and model states a config needs, each
a ``Term`` that names its formula and the keys that lower it (``kvideo.preflight.memory`` adds
them up against a limit).

Every figure is a lower bound: what the run must hold at the least (no allocator slack, no
worker-process overhead, no CUDA context, no DDP buckets, no pinned copies, no second epoch's
workers), so a refusal is certain. A config that passes may still not fit, but not by much.

Torch-free, like the config it reads: the parameter count comes from the config, not
from a built model (``tests/unit/test_memory_estimate.py`` checks it against ``build_model``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvideo.config.checks import visuals_factor
from kvideo.config.model import ModelConfig
from kvideo.hf_folders import (
    lm_geometry,
    parameter_count,
    parameter_counts_by_part,
    resolve_model_folder,
    tower_geometry,
    tower_parameter_prefix,
)
from kvideo.preflight.frames import padded_tokens
from kvideo.preflight.model_size import conv_stem_channels, estimate_params

if TYPE_CHECKING:
    from kvideo.config.root import KVideoConfig

# kvideo/data/loader.py builds its DataLoader with prefetch_factor=4 (PyTorch's default is 2):
# each worker keeps 4 batches ready, on top of the one being trained.
PREFETCH_FACTOR = 4
# ByteTokenizer.vocab_size: 256 bytes + PAD, BOS, EOS. A tokenizer.json's size is unknown until
# it is loaded, so the estimate counts no embedding for it (a lower bound).
BYTE_VOCAB = 259
# fp32 weight 4 + fp32 grad 4 + AdamW exp_avg 4 + exp_avg_sq 4 (AMP keeps fp32 master weights).
STATE_BYTES_PER_PARAM = 16
# Values autograd keeps per token, per block and per unit of width of a pre-norm block (LN in
# and out, qkv 3, attention out, LN2 in and out, fc1 4, GELU 4 = 16). Measured with
# saved_tensors_hooks: 16.8-18.0 at widths 128-512, so 16 stays below the real figure.
SAVED_VALUES_PER_TOKEN = 16
# Refuse past 90% of the limit: the rest is the interpreter, torch, CUDA/OpenMP pools and the
# page cache the decoders read through, none of which the estimate counts.
HEADROOM = 0.9
# A refusal lists each term of at least 1% of the total, then the rest as one sum.
SHOWN_SHARE = 0.01

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
FRAME_FIELDS = "trainer.batch_size, video.max_frames or video.frame_size"
MODEL_FIELDS = "model.*_width, model.*_depth or model.max_seq_len"


def format_bytes(n: float) -> str:
    """Binary units, one decimal: ``format_bytes(1.5 * 2**40) == '1.5 TiB'``."""
    unit = 0
    while n >= 1024 and unit < len(UNITS) - 1:
        n /= 1024
        unit += 1
    return f"{n:.0f} B" if unit == 0 else f"{n:.1f} {UNITS[unit]}"


@dataclass(frozen=True)
class Term:
    """One part of the estimate, as the message shows it: ``label = formula = numbers = size``."""

    label: str
    formula: str
    numbers: str
    bytes: int
    lower: str  # what to lower when this term is the largest

    def __str__(self) -> str:
        return f"{self.label} = {self.formula} = {self.numbers} = {format_bytes(self.bytes)}"


# ----------------------------------------------------------------------------- parameters


# ----------------------------------------------------------------------------- terms


def frames_per_batch(cfg: KVideoConfig) -> int:
    """Frames in one batch: every clip is padded to ``video.max_frames``, and a sample holds up to
    ``data.max_visuals`` clips."""
    return cfg.trainer.batch_size * cfg.data.max_visuals * cfg.video.max_frames


def frame_pixels(cfg: KVideoConfig) -> int:
    """Pixels of one frame as the model reads it: the ``frame_size`` square, or with
    ``video.resize=max_pixels`` up to ``video.max_pixels`` (the larger, to be safe)."""
    square = cfg.video.frame_size**2
    return max(square, cfg.video.max_pixels) if cfg.video.resize == "max_pixels" else square


def uint8_batch_bytes(cfg: KVideoConfig) -> int:
    """One batch of decoded frames as the loader holds them: uint8, (B, F, S, S, 3)."""
    return frames_per_batch(cfg) * frame_pixels(cfg) * 3


def batch_frames(cfg: KVideoConfig) -> str:
    """The frames of one batch as a formula: each sample holds up to ``data.max_visuals`` clips
    (named when above 1) of ``video.max_frames`` slots."""
    return f"trainer.batch_size * {visuals_factor(cfg.data.max_visuals)[0]}video.max_frames"


def batch_frame_numbers(cfg: KVideoConfig) -> str:
    """``batch_frames`` in numbers."""
    return f"{cfg.trainer.batch_size} * {visuals_factor(cfg.data.max_visuals)[1]}{cfg.video.max_frames}"


def frame_numbers(cfg: KVideoConfig) -> str:
    return f"{batch_frame_numbers(cfg)} * {cfg.video.frame_size}^2"


def loader_frames_term(cfg: KVideoConfig) -> Term:
    """uint8 batches on the host: with workers, each keeps ``PREFETCH_FACTOR`` batches ready
    while one trains; without, the one batch being trained."""
    workers = cfg.trainer.num_workers
    base = f"{batch_frames(cfg)} * video.frame_size^2 * 3 B"
    if workers:
        return Term(
            "frames in flight",
            f"{base} * (trainer.num_workers * {PREFETCH_FACTOR} prefetched + 1 in training) batches",
            f"{frame_numbers(cfg)} * 3 B * ({workers} * {PREFETCH_FACTOR} + 1)",
            uint8_batch_bytes(cfg) * (workers * PREFETCH_FACTOR + 1),
            FRAME_FIELDS + " or trainer.num_workers",
        )
    return Term(
        "frames of one batch (trainer.num_workers=0)",
        base,
        f"{frame_numbers(cfg)} * 3 B",
        uint8_batch_bytes(cfg),
        FRAME_FIELDS,
    )


def gpu_decoded_frames_term(cfg: KVideoConfig) -> Term:
    """``decord_gpu`` decodes on the device: ``decoder.prefetch`` batches queued plus the one
    being trained, uint8."""
    batches = cfg.decoder.prefetch + 1
    return Term(
        "decoded frames on the device",
        f"{batch_frames(cfg)} * video.frame_size^2 * 3 B * (decoder.prefetch + 1) batches",
        f"{frame_numbers(cfg)} * 3 B * ({cfg.decoder.prefetch} + 1)",
        uint8_batch_bytes(cfg) * batches,
        FRAME_FIELDS + " or decoder.prefetch",
    )


def normalized_frames_term(cfg: KVideoConfig) -> Term:
    """``normalize_frames`` turns the batch into float32 on the training device."""
    return Term(
        "normalized frames",
        f"{batch_frames(cfg)} * 3 * video.frame_size^2 * 4 B",
        f"{frame_numbers(cfg)} * 3 * 4 B",
        uint8_batch_bytes(cfg) * 4,
        FRAME_FIELDS,
    )


def conv_stem_values_per_frame(frame_size: int, model: ModelConfig) -> int:
    """Each stride-2 stage keeps its conv, GroupNorm and GELU outputs at its resolution."""
    return sum(
        3 * out * (frame_size >> (i + 1)) ** 2
        for i, out in enumerate(conv_stem_channels(model.patch_size, model.vision_width))
    )


def trains_at_start(model: ModelConfig, part: str) -> bool:
    """Whether ``part`` trains at step 0 (a lower bound: a later stage may train more)."""
    if part == "lm" and model.lora_rank:
        return False  # adapters only: their states are small next to the LM's
    return part not in model.freeze


def pretrained_vision_activation_terms(cfg: KVideoConfig, value_bytes: int) -> list[Term]:
    """A frozen tower runs without autograd (nothing kept); a trained one keeps its blocks'."""
    model = cfg.model
    if not trains_at_start(model, "vision"):
        return []
    tower = tower_geometry("model.vision_path", resolve_model_folder("model.vision_path", model.vision_path))
    k = SAVED_VALUES_PER_TOKEN
    frames = frames_per_batch(cfg)
    return [
        Term(
            "vision tower activations",
            f"{batch_frames(cfg)} * (image_size / patch_size)^2 tokens * hidden_size "
            f"* num_hidden_layers * {k} * {value_bytes} B (model.vision_path)",
            f"{batch_frame_numbers(cfg)} * {tower.grid}^2 * {tower.width} "
            f"* {tower.depth} * {k} * {value_bytes} B",
            frames * tower.grid**2 * tower.width * tower.depth * k * value_bytes,
            FRAME_FIELDS + ", or freeze the tower (model.freeze=[vision])",
        )
    ]


def vision_activation_terms(cfg: KVideoConfig, value_bytes: int) -> list[Term]:
    """The ViT runs on every frame of the batch, padded ones included (timm: not counted)."""
    model, size = cfg.model, cfg.video.frame_size
    if model.pretrained_parts:
        return pretrained_vision_activation_terms(cfg, value_bytes)
    if model.pretrained_model:
        return []  # a lower bound: the tower's own activations are not estimated yet
    if model.vision_backbone != "vit":
        return []
    grid = size // model.patch_size
    frames = frames_per_batch(cfg)
    k = SAVED_VALUES_PER_TOKEN
    terms = [
        Term(
            "ViT activations",
            f"{batch_frames(cfg)} * (video.frame_size / model.patch_size)^2 tokens "
            f"* model.vision_width * model.vision_depth * {k} * {value_bytes} B",
            f"{batch_frame_numbers(cfg)} * ({size} / {model.patch_size})^2 "
            f"* {model.vision_width} * {model.vision_depth} * {k} * {value_bytes} B",
            frames * grid * grid * model.vision_width * model.vision_depth * k * value_bytes,
            FRAME_FIELDS + ", or raise model.patch_size",
        )
    ]
    if model.patch_stem == "conv":
        values = conv_stem_values_per_frame(size, model)
        terms.append(
            Term(
                "conv stem activations",
                f"{batch_frames(cfg)} * {values} values * {value_bytes} B",
                f"{batch_frame_numbers(cfg)} * {values} * {value_bytes} B",
                frames * values * value_bytes,
                FRAME_FIELDS,
            )
        )
    return terms


def lm_activation_terms(cfg: KVideoConfig, value_bytes: int, vocab_size: int) -> list[Term]:
    """Blocks over ``[visual | text]``, the (B, 1, S, S) boolean attention mask, fp32 logits."""
    model, b = cfg.model, cfg.trainer.batch_size
    seq = padded_tokens(cfg.video, model, cfg.data.max_visuals)
    k = SAVED_VALUES_PER_TOKEN
    clips = visuals_factor(cfg.data.max_visuals)[0]
    seq_formula = f"({clips}video.max_frames * model.tokens_per_frame + model.max_text_len)"
    width, depth, shape = model.lm_width, model.lm_depth, "model.lm_width * model.lm_depth"
    logit_positions, logit_formula = model.max_text_len, "model.max_text_len"
    if model.pretrained_parts:
        # Gradients reach the projector through the LM, frozen or not: its blocks keep activations.
        lm = lm_geometry("model.lm_path", resolve_model_folder("model.lm_path", model.lm_path))
        width, depth, shape = lm.width, lm.depth, "hidden_size * num_hidden_layers (model.lm_path)"
    if model.pretrained_model:
        # A released VLM's head runs on every position, the video's included.
        lm = lm_geometry("model.path", resolve_model_folder("model.path", model.path))
        width, depth, shape = lm.width, lm.depth, "hidden_size * num_hidden_layers (model.path)"
        logit_positions, logit_formula = seq, seq_formula
    return [
        Term(
            "LM activations",
            f"trainer.batch_size * {seq_formula} tokens * {shape} * {k} * {value_bytes} B",
            f"{b} * {seq} * {width} * {depth} * {k} * {value_bytes} B",
            b * seq * width * depth * k * value_bytes,
            "trainer.batch_size, video.max_frames or model.tokens_per_frame",
        ),
        Term(
            "attention mask",
            f"trainer.batch_size * {seq_formula}^2 * 1 B",
            f"{b} * {seq}^2 * 1 B",
            b * seq * seq,
            "trainer.batch_size, video.max_frames or model.tokens_per_frame",
        ),
        Term(
            "logits",
            f"trainer.batch_size * {logit_formula} * vocabulary * 4 B",
            f"{b} * {logit_positions} * {vocab_size} * 4 B",
            b * logit_positions * vocab_size * 4,
            "trainer.batch_size or model.max_text_len",
        ),
    ]


def pretrained_state_term(cfg: KVideoConfig, ranks: int = 1) -> Term:
    """Every pretrained weight in fp32 (4 B), plus grads and AdamW moments (12 B) for the parts
    that train from step 0; the projector (small, unknown before it is built) is not counted.
    ``ranks``: the ranks FSDP splits them over (``partitioned``)."""
    model = cfg.model
    vision_folder = resolve_model_folder("model.vision_path", model.vision_path)
    vision = parameter_count(vision_folder, prefix=tower_parameter_prefix(vision_folder))
    lm = parameter_count(resolve_model_folder("model.lm_path", model.lm_path))
    trained = vision * trains_at_start(model, "vision") + lm * trains_at_start(model, "lm")
    training_bytes = STATE_BYTES_PER_PARAM - 4
    return partitioned(
        Term(
            "model states",
            f"(tower + LM parameters) * 4 B + trained parameters * {training_bytes} B (grads, AdamW moments)",
            f"({vision:,} + {lm:,}) * 4 B + {trained:,} * {training_bytes} B",
            (vision + lm) * 4 + trained * training_bytes,
            "model.freeze (e.g. [vision]) or model.lora_rank",
        ),
        ranks,
    )


def released_vlm_state_term(cfg: KVideoConfig, ranks: int = 1) -> Term:
    """``pretrained_state_term`` for one released VLM folder (``model.path``), its parts counted
    from the safetensors headers (LoRA adapters are not counted)."""
    model = cfg.model
    counts = parameter_counts_by_part(resolve_model_folder("model.path", model.path))
    total = sum(counts.values())
    trained = sum(
        count for part, count in counts.items() if trains_at_start(model, part) and not model.lora_rank
    )
    training_bytes = STATE_BYTES_PER_PARAM - 4
    return partitioned(
        Term(
            "model states",
            f"parameters * 4 B + trained parameters * {training_bytes} B (grads, AdamW moments)",
            f"{total:,} * 4 B + {trained:,} * {training_bytes} B",
            total * 4 + trained * training_bytes,
            "model.freeze (e.g. [vision]) or model.lora_rank",
        ),
        ranks,
    )


def model_state_term(cfg: KVideoConfig, vocab_size: int, ranks: int = 1) -> Term:
    if cfg.model.pretrained_parts:
        return pretrained_state_term(cfg, ranks)
    if cfg.model.pretrained_model:
        return released_vlm_state_term(cfg, ranks)
    params = estimate_params(cfg.model, vocab_size, cfg.video.max_frames, cfg.video.frame_size)
    term = Term(
        "model states",
        f"parameters * {STATE_BYTES_PER_PARAM} B (fp32 weights 4, grads 4, AdamW moments 8)",
        f"{params:,} * {STATE_BYTES_PER_PARAM} B",
        params * STATE_BYTES_PER_PARAM,
        MODEL_FIELDS,
    )
    return partitioned(term, ranks)


def partitioned(term: Term, ranks: int) -> Term:
    """A rank's share of ``term`` when FSDP splits it over ``ranks`` ranks."""
    if ranks <= 1:
        return term
    return Term(
        f"{term.label} per rank",
        f"({term.formula}) / {ranks} ranks (trainer.strategy=fsdp)",
        f"({term.numbers}) / {ranks}",
        -(-term.bytes // ranks),
        term.lower + " or add ranks",
    )


def fsdp_ranks(cfg: KVideoConfig, environ: Mapping[str, str] | None = None) -> int:
    """The ranks FSDP splits the model states over, as far as compose time can know: the
    ``WORLD_SIZE`` torchrun sets, else 1 (every state whole, DDP's figure)."""
    env = os.environ if environ is None else environ
    if cfg.trainer.strategy != "fsdp" or not env.get("WORLD_SIZE", "").isdigit():
        return 1
    return max(1, int(env["WORLD_SIZE"]))


def training_device_terms(
    cfg: KVideoConfig, *, value_bytes: int, vocab_size: int, ranks: int = 1
) -> list[Term]:
    """What lives where the model trains: normalized frames, activations, weights and optimizer
    (``ranks``: the ranks FSDP splits the latter over)."""
    return [
        normalized_frames_term(cfg),
        *vision_activation_terms(cfg, value_bytes),
        *lm_activation_terms(cfg, value_bytes, vocab_size),
        model_state_term(cfg, vocab_size, ranks),
    ]


def host_terms(cfg: KVideoConfig, *, trains_on_host: bool, vocab_size: int) -> list[Term]:
    """Host memory of one training process: the loader's uint8 batches (CPU decoders), and the
    training-device terms in fp32 when the model trains on the CPU."""
    terms = [] if cfg.decoder.decodes_on_gpu else [loader_frames_term(cfg)]
    if trains_on_host:
        terms += training_device_terms(cfg, value_bytes=4, vocab_size=vocab_size, ranks=fsdp_ranks(cfg))
    return terms


# ----------------------------------------------------------------------------- checks
