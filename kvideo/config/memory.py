"""Memory estimates: a config whose frames or model cannot fit is refused before any work, with
the arithmetic, instead of being OOM-killed minutes later (``video.frame_size=65536`` grew to
22.5 GB in 110 s) or crashing in the allocator.

Every figure is a lower bound: what the run must hold at the least (no allocator slack, no
worker-process overhead, no CUDA context, no DDP buckets, no pinned copies, no second epoch's
workers), so a refusal is certain. A config that passes may still not fit, but not by much.

Torch-free, like the rest of ``kvideo.config``: the parameter count comes from the config, not
from a built model (``tests/unit/test_memory_estimate.py`` checks it against ``build_model``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvideo.config.frames import max_tokens_per_frame
from kvideo.config.model import ModelConfig
from kvideo.config.model_size import conv_stem_channels, estimate_params
from kvideo.config.pretrained import (
    lm_geometry,
    parameter_count,
    resolve_model_folder,
    tower_geometry,
    tower_parameter_prefix,
)
from kvideo.resources import MemoryLimit, gpu_visible, memory_limit, processes_per_node

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
    """Frames in one batch: every clip is padded to ``video.max_frames``."""
    return cfg.trainer.batch_size * cfg.video.max_frames


def frame_pixels(cfg: KVideoConfig) -> int:
    """Pixels of one frame as the model reads it: the ``frame_size`` square, or with
    ``video.resize=max_pixels`` up to ``video.max_pixels`` (the larger, to be safe)."""
    square = cfg.video.frame_size**2
    return max(square, cfg.video.max_pixels) if cfg.video.resize == "max_pixels" else square


def uint8_batch_bytes(cfg: KVideoConfig) -> int:
    """One batch of decoded frames as the loader holds them: uint8, (B, F, S, S, 3)."""
    return frames_per_batch(cfg) * frame_pixels(cfg) * 3


def _frame_numbers(cfg: KVideoConfig) -> str:
    return f"{cfg.trainer.batch_size} * {cfg.video.max_frames} * {cfg.video.frame_size}^2"


def loader_frames_term(cfg: KVideoConfig) -> Term:
    """uint8 batches on the host: with workers, each keeps ``PREFETCH_FACTOR`` batches ready
    while one trains; without, the one batch being trained."""
    workers = cfg.trainer.num_workers
    base = "trainer.batch_size * video.max_frames * video.frame_size^2 * 3 B"
    if workers:
        return Term(
            "frames in flight",
            f"{base} * (trainer.num_workers * {PREFETCH_FACTOR} prefetched + 1 in training) batches",
            f"{_frame_numbers(cfg)} * 3 B * ({workers} * {PREFETCH_FACTOR} + 1)",
            uint8_batch_bytes(cfg) * (workers * PREFETCH_FACTOR + 1),
            FRAME_FIELDS + " or trainer.num_workers",
        )
    return Term(
        "frames of one batch (trainer.num_workers=0)",
        base,
        f"{_frame_numbers(cfg)} * 3 B",
        uint8_batch_bytes(cfg),
        FRAME_FIELDS,
    )


def gpu_decoded_frames_term(cfg: KVideoConfig) -> Term:
    """``decord_gpu`` decodes on the device: ``decoder.prefetch`` batches queued plus the one
    being trained, uint8."""
    batches = cfg.decoder.prefetch + 1
    return Term(
        "decoded frames on the device",
        "trainer.batch_size * video.max_frames * video.frame_size^2 * 3 B * (decoder.prefetch + 1) batches",
        f"{_frame_numbers(cfg)} * 3 B * ({cfg.decoder.prefetch} + 1)",
        uint8_batch_bytes(cfg) * batches,
        FRAME_FIELDS + " or decoder.prefetch",
    )


def normalized_frames_term(cfg: KVideoConfig) -> Term:
    """``normalize_frames`` turns the batch into float32 on the training device."""
    return Term(
        "normalized frames",
        "trainer.batch_size * video.max_frames * 3 * video.frame_size^2 * 4 B",
        f"{_frame_numbers(cfg)} * 3 * 4 B",
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
            f"trainer.batch_size * video.max_frames * (image_size / patch_size)^2 tokens * hidden_size "
            f"* num_hidden_layers * {k} * {value_bytes} B (model.vision_path)",
            f"{cfg.trainer.batch_size} * {cfg.video.max_frames} * {tower.grid}^2 * {tower.width} "
            f"* {tower.depth} * {k} * {value_bytes} B",
            frames * tower.grid**2 * tower.width * tower.depth * k * value_bytes,
            FRAME_FIELDS + ", or freeze the tower (model.freeze=[vision])",
        )
    ]


def vision_activation_terms(cfg: KVideoConfig, value_bytes: int) -> list[Term]:
    """The ViT runs on every frame of the batch, padded ones included (timm: not counted)."""
    model, size = cfg.model, cfg.video.frame_size
    if model.family == "hf":
        return pretrained_vision_activation_terms(cfg, value_bytes)
    if model.vision_backbone != "vit":
        return []
    grid = size // model.patch_size
    frames = frames_per_batch(cfg)
    k = SAVED_VALUES_PER_TOKEN
    terms = [
        Term(
            "ViT activations",
            f"trainer.batch_size * video.max_frames * (video.frame_size / model.patch_size)^2 tokens "
            f"* model.vision_width * model.vision_depth * {k} * {value_bytes} B",
            f"{cfg.trainer.batch_size} * {cfg.video.max_frames} * ({size} / {model.patch_size})^2 "
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
                f"trainer.batch_size * video.max_frames * {values} values * {value_bytes} B",
                f"{cfg.trainer.batch_size} * {cfg.video.max_frames} * {values} * {value_bytes} B",
                frames * values * value_bytes,
                FRAME_FIELDS,
            )
        )
    return terms


def lm_activation_terms(cfg: KVideoConfig, value_bytes: int, vocab_size: int) -> list[Term]:
    """Blocks over ``[visual | text]``, the (B, 1, S, S) boolean attention mask, fp32 logits."""
    model, b = cfg.model, cfg.trainer.batch_size
    seq = cfg.video.max_frames * max_tokens_per_frame(cfg.video, model) + model.max_text_len
    k = SAVED_VALUES_PER_TOKEN
    seq_formula = "(video.max_frames * model.tokens_per_frame + model.max_text_len)"
    width, depth, shape = model.lm_width, model.lm_depth, "model.lm_width * model.lm_depth"
    if model.family == "hf":
        # Gradients reach the projector through the LM, frozen or not: its blocks keep activations.
        lm = lm_geometry("model.lm_path", resolve_model_folder("model.lm_path", model.lm_path))
        width, depth, shape = lm.width, lm.depth, "hidden_size * num_hidden_layers (model.lm_path)"
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
            "trainer.batch_size * model.max_text_len * vocabulary * 4 B",
            f"{b} * {model.max_text_len} * {vocab_size} * 4 B",
            b * model.max_text_len * vocab_size * 4,
            "trainer.batch_size or model.max_text_len",
        ),
    ]


def pretrained_state_term(cfg: KVideoConfig, shards: int = 1) -> Term:
    """Every pretrained weight in fp32 (4 B), plus grads and AdamW moments (12 B) for the parts
    that train from step 0; the projector (small, unknown before it is built) is not counted.
    ``shards``: the ranks FSDP splits them over (``sharded``)."""
    model = cfg.model
    vision_folder = resolve_model_folder("model.vision_path", model.vision_path)
    vision = parameter_count(vision_folder, prefix=tower_parameter_prefix(vision_folder))
    lm = parameter_count(resolve_model_folder("model.lm_path", model.lm_path))
    trained = vision * trains_at_start(model, "vision") + lm * trains_at_start(model, "lm")
    training_bytes = STATE_BYTES_PER_PARAM - 4
    return sharded(
        Term(
            "model states",
            f"(tower + LM parameters) * 4 B + trained parameters * {training_bytes} B (grads, AdamW moments)",
            f"({vision:,} + {lm:,}) * 4 B + {trained:,} * {training_bytes} B",
            (vision + lm) * 4 + trained * training_bytes,
            "model.freeze (e.g. [vision]) or model.lora_rank",
        ),
        shards,
    )


def model_state_term(cfg: KVideoConfig, vocab_size: int, shards: int = 1) -> Term:
    if cfg.model.family == "hf":
        return pretrained_state_term(cfg, shards)
    params = estimate_params(cfg.model, vocab_size, cfg.video.max_frames, cfg.video.frame_size)
    term = Term(
        "model states",
        f"parameters * {STATE_BYTES_PER_PARAM} B (fp32 weights 4, grads 4, AdamW moments 8)",
        f"{params:,} * {STATE_BYTES_PER_PARAM} B",
        params * STATE_BYTES_PER_PARAM,
        MODEL_FIELDS,
    )
    return sharded(term, shards)


def sharded(term: Term, shards: int) -> Term:
    """A rank's share of ``term`` when FSDP splits it over ``shards`` ranks."""
    if shards <= 1:
        return term
    return Term(
        f"{term.label} per rank",
        f"({term.formula}) / {shards} ranks (trainer.strategy=fsdp)",
        f"({term.numbers}) / {shards}",
        -(-term.bytes // shards),
        term.lower + " or add ranks",
    )


def fsdp_shards(cfg: KVideoConfig, environ: Mapping[str, str] | None = None) -> int:
    """The ranks FSDP splits the model states over, as far as compose time can know: the
    ``WORLD_SIZE`` torchrun sets, else 1 (every state whole, DDP's figure)."""
    env = os.environ if environ is None else environ
    if cfg.trainer.strategy != "fsdp" or not env.get("WORLD_SIZE", "").isdigit():
        return 1
    return max(1, int(env["WORLD_SIZE"]))


def training_device_terms(
    cfg: KVideoConfig, *, value_bytes: int, vocab_size: int, shards: int = 1
) -> list[Term]:
    """What lives where the model trains: normalized frames, activations, weights and optimizer
    (``shards``: the ranks FSDP splits the latter over)."""
    return [
        normalized_frames_term(cfg),
        *vision_activation_terms(cfg, value_bytes),
        *lm_activation_terms(cfg, value_bytes, vocab_size),
        model_state_term(cfg, vocab_size, shards),
    ]


def host_terms(cfg: KVideoConfig, *, trains_on_host: bool, vocab_size: int) -> list[Term]:
    """Host memory of one training process: the loader's uint8 batches (CPU decoders), and the
    training-device terms in fp32 when the model trains on the CPU."""
    terms = [] if cfg.decoder.decodes_on_gpu else [loader_frames_term(cfg)]
    if trains_on_host:
        terms += training_device_terms(cfg, value_bytes=4, vocab_size=vocab_size, shards=fsdp_shards(cfg))
    return terms


# ----------------------------------------------------------------------------- checks


def require_fits(
    terms: list[Term], limit: MemoryLimit, where: str, processes: tuple[int, str] = (1, "")
) -> None:
    """Refuse when the terms (times the processes sharing the memory) pass ``HEADROOM`` of the
    limit; the message lists every term, largest first, with its arithmetic."""
    count, variable = processes
    per_process = sum(t.bytes for t in terms)
    need = per_process * count
    if need <= HEADROOM * limit.bytes:
        return
    times = f" ({format_bytes(per_process)} per process * {count} processes, {variable})" if count > 1 else ""
    ordered = sorted(terms, key=lambda t: t.bytes, reverse=True)
    shown = [t for t in ordered if t.bytes >= SHOWN_SHARE * per_process]
    rest = ordered[len(shown) :]
    parts = [str(t) for t in shown]
    if rest:
        parts.append(f"{len(rest)} smaller terms = {format_bytes(sum(t.bytes for t in rest))}")
    raise ValueError(
        f"{where} memory: this run needs at least {format_bytes(need)}{times} > {HEADROOM:.0%} of "
        f"{format_bytes(limit.bytes)} ({limit.source}): " + "; ".join(parts) + f"; lower {ordered[0].lower}"
    )


def compose_time_vocab(cfg: KVideoConfig) -> int:
    """Byte-level: 259. A tokenizer.json or an LM's tokenizer: 0 (unknown until loaded; a lower bound)."""
    return 0 if cfg.data.tokenizer or cfg.model.family == "hf" else BYTE_VOCAB


def trains_on_host(device: str, *, gpu: bool | None = None) -> bool:
    """``cpu``, or ``auto`` with no GPU visible (``resources.gpu_visible``, torch-free)."""
    return device == "cpu" or (device == "auto" and not (gpu_visible() if gpu is None else gpu))


def check_fits_in_memory(
    cfg: KVideoConfig,
    *,
    limit: MemoryLimit | None = None,
    processes: tuple[int, str] | None = None,
    on_host: bool | None = None,
) -> None:
    """Compose-time host check, against this machine unless told otherwise (``to_validated``
    passes the SLURM job's ``mem_gb`` for sweep points that will run on a compute node)."""
    limit = memory_limit() if limit is None else limit
    if limit is None:  # not Linux: nothing to compare against
        return
    on_host = trains_on_host(cfg.trainer.device) if on_host is None else on_host
    terms = host_terms(cfg, trains_on_host=on_host, vocab_size=compose_time_vocab(cfg))
    require_fits(terms, limit, "host", processes_per_node() if processes is None else processes)


def check_fits_on_gpu(
    cfg: KVideoConfig,
    *,
    total_bytes: int,
    bf16: bool,
    vocab_size: int = BYTE_VOCAB,
    device: str = "cuda",
    shards: int = 1,
) -> None:
    """Trainer start-up check for a CUDA device (compose time cannot ask the GPU without torch).

    Call it once the device is known, before building the model, e.g.
    ``check_fits_on_gpu(cfg, total_bytes=torch.cuda.mem_get_info(dev)[1],
    bf16=autocast_dtype == torch.bfloat16, vocab_size=tokenizer.vocab_size, device=str(dev))``.
    ``total_bytes`` is the device's total, not its momentary free memory, for the reason
    ``resources.memory_limit`` gives. Activations count 2 B a value under bf16 autocast.
    ``shards``: the world size under ``trainer.strategy=fsdp`` (each rank holds its share of the
    model states). Raises ``ValueError`` with the arithmetic.
    """
    terms = training_device_terms(cfg, value_bytes=2 if bf16 else 4, vocab_size=vocab_size, shards=shards)
    if cfg.decoder.decodes_on_gpu:
        terms.append(gpu_decoded_frames_term(cfg))
    else:
        terms.append(
            Term(
                "frames copied to the device",
                "trainer.batch_size * video.max_frames * video.frame_size^2 * 3 B",
                f"{_frame_numbers(cfg)} * 3 B",
                uint8_batch_bytes(cfg),
                FRAME_FIELDS,
            )
        )
    require_fits(terms, MemoryLimit(total_bytes, f"total memory of {device}"), device)


def check_fits_where_it_runs(cfg: KVideoConfig, launcher: dict[str, Any]) -> None:
    """The host check against the machine the run will use.

    ``launcher`` holds ``hydra.launcher``'s ``_target_``, ``mem_gb``, ``tasks_per_node`` and
    ``gpus_per_node`` when the config carries the hydra node (sweep points in the multirun
    callback do; a job's own config does not, and a job runs where it validates). Jobs of the
    slurm launcher run on a compute node, not on the submitting login node: they are checked
    against the job's ``mem_gb`` (GiB per node, shared by ``tasks_per_node`` tasks), and not at
    all when it is unset; each job checks again on its node at start (``train.py``).
    """
    if not str(launcher.get("_target_") or "").endswith("SlurmLauncher"):
        check_fits_in_memory(cfg)
        return
    mem_gb = launcher.get("mem_gb")
    if not mem_gb:
        return
    tasks = int(launcher.get("tasks_per_node") or 1)
    gpus = int(launcher.get("gpus_per_node") or 0)
    limit = MemoryLimit(int(float(mem_gb) * 2**30), f"hydra.launcher.mem_gb={mem_gb}")
    check_fits_in_memory(
        cfg,
        limit=limit,
        processes=(tasks, "hydra.launcher.tasks_per_node"),
        on_host=trains_on_host(cfg.trainer.device, gpu=gpus > 0),
    )
