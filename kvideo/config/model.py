"""``ModelConfig``: the video-language model's shape.

``tokens_per_frame`` and ``max_text_len`` live here so the compose-time token budget
(``max_frames * tokens_per_frame + max_text_len <= max_seq_len``) is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kvideo.config.checks import require_at_most, require_choice, require_positive, require_range
from kvideo.registry import MODEL_FAMILIES

# Families (kvideo.model.families; choices from kvideo.registry.MODEL_FAMILIES):
# builtin: kvideo's own ViT -> projector -> LM, trained from scratch (tiny_vlm, small_vlm).
# hf: a pretrained Hugging Face vision tower and causal LM joined by kvideo's projector (hf_vlm).
# pretrained: a whole released VLM (Qwen2.5-VL, ...) from one folder (model=pretrained).
PRETRAINED_PARTS_FAMILY = "hf"
PRETRAINED_MODEL_FAMILY = "pretrained"
VISION_BACKBONES = ("vit", "timm")
PATCH_STEMS = ("linear", "conv")
PROJECTORS = ("mlp2x_gelu", "linear")
# transformers' attention back ends (``attn_implementation``)
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
# The parts model.freeze and model.freeze_schedule name; any entry holding one of ``*?[.`` is
# instead an fnmatch pattern over parameter names (``lm.*.layers.0.*``).
MODEL_PARTS = ("vision", "projector", "lm")
_PATTERN_CHARS = set("*?[.")
# Every linear layer of a Qwen2 / Llama / Mistral decoder block: LoRA on all of them is the
# QLoRA paper's finding (attention-only LoRA trails full finetuning; all-linear matches it).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_part_name(entry: str) -> bool:
    """A ``model.freeze`` entry names a part unless it holds a pattern character."""
    return not (set(entry) & _PATTERN_CHARS)


def require_parts_or_patterns(field: str, entries: list[str]) -> None:
    """Each entry is a known part or an fnmatch pattern (whether a pattern matches any parameter
    is checked when the model is built: the names exist only then)."""
    for entry in entries:
        if not entry:
            raise ValueError(f"{field} has an empty entry")
        if is_part_name(entry) and entry not in MODEL_PARTS:
            raise ValueError(
                f"{field}: unknown part {entry!r}; expected one of {list(MODEL_PARTS)} or an fnmatch "
                "pattern of parameter names (with *, ? or a dot, e.g. 'lm.*.layers.0.*')"
            )


@dataclass
class FreezeStage:
    """From optimizer step ``start_step`` on, ``freeze`` stops and ``unfreeze`` restarts training
    of the parts / patterns listed (KempnerForge's ``FreezeStage``, its ``FreezeSpec(module,
    frozen)`` list written as two lists). Stages apply cumulatively on top of ``model.freeze``.

    LLaVA's recipe in one run: ``model.freeze=[vision,lm]`` (projector-only alignment) and
    ``model.freeze_schedule=[{start_step: 2000, unfreeze: [lm]}]`` (then LM / LoRA finetuning).
    """

    start_step: int = 0
    freeze: list[str] = field(default_factory=list)
    unfreeze: list[str] = field(default_factory=list)


# Generous but finite upper bounds: a typo (an extra zero or two) fails here in one line instead
# of in the allocator. Each reason is part of the message.
_WIDEST = "16384 is the width of the widest published LM (Llama 3.1 405B)"
_DEEPEST = "deeper than any published transformer (GPT-3: 96 blocks, Llama 3.1 405B: 126)"
BOUNDS = {
    # one block 16384 wide is 12 * 16384^2 = 3.2 G parameters = 48 GiB of fp32 weights, grads, Adam
    "vision_width": (16384, _WIDEST),
    "lm_width": (16384, _WIDEST),
    "vision_depth": (256, _DEEPEST),
    "lm_depth": (256, _DEEPEST),
    # the learned table is max_seq_len * lm_width floats: 1e8 positions at width 128 is 48 GiB
    # of weights alone (191 GiB with grads and Adam states)
    "max_seq_len": (
        131072,
        "131072 (128K) positions is the longest context of common LMs; the "
        "position table is model.max_seq_len * model.lm_width floats",
    ),
}


@dataclass
class ModelConfig:
    """Vision encoder -> projector -> causal LM.

    name: the model config's name (``tiny_vlm``, ``small_vlm``, ``hf_vlm``), recorded in the run.
    family: ``builtin`` (kvideo's own ViT and LM, from scratch; the fields from
        ``vision_backbone`` to ``lm_heads`` shape them) or ``hf`` (pretrained Hugging Face
        parts from ``vision_path`` / ``lm_path``, which set their own widths and depths).
    vision_backbone: ``vit`` (built in, trained from scratch) or ``timm`` (needs
        ``timm_model`` and a local ``timm_weights`` file; nothing is downloaded).
    timm_model / timm_weights: the timm architecture name and its local weights file.
    patch_size / vision_width / vision_depth / vision_heads: the per-frame ViT.
    patch_stem: ``linear`` (one strided projection, the classic ViT) or ``conv`` (stride-2
        3x3 convolutions down to the patch grid; learns shapes far faster from scratch).
    tokens_per_frame: visual tokens each frame is pooled to (a square number, pooled
        from the patch grid as a k x k grid).
    lm_width / lm_depth / lm_heads: the causal decoder over ``[visual | text]``.
    max_seq_len: hard cap on the LM sequence (positions table size).
    max_text_len: text tokens per sample (prompt + caption + EOS), padded/truncated.
    dropout: dropout in the builtin LM's blocks.
    motion_tokens: add each visual token's feature change since the previous frame
        (TSN-style difference features), so motion is a local cue for the LM.
    time_embedding: add an embedding of each frame's display time in seconds to its tokens
        (on by default for ``hf``; see ``kvideo.model.projector``).

    Hugging Face parts (``family: hf``), loaded offline:
    vision_path: a local model folder (``config.json``, weights, ``preprocessor_config.json``)
        or a hub id already in the local Hugging Face cache: SigLIP, CLIP, or any vision model
        whose forward returns patch features. Its image processor's mean/std normalize frames.
    vision_feature_layer: which hidden state of the tower feeds the projector (-2, LLaVA's
        choice: the penultimate layer transfers better than the contrastively tuned last one).
    lm_path: a causal LM folder or cached hub id (``AutoModelForCausalLM``: Qwen2, Llama, ...),
        whose tokenizer (``AutoTokenizer``) and chat template frame prompt and caption.
    projector: ``mlp2x_gelu`` (LLaVA-1.5's Linear-GELU-Linear) or ``linear``.
    attn_implementation: passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``).

    A released VLM (``family: pretrained``), loaded offline through ``AutoModelForImageTextToText``:
    path: its folder (``save_pretrained``) or a hub id already in the local Hugging Face cache; its
        own tokenizer, chat template and image processor settings come from there.
    trust_remote_code: passed to ``from_pretrained``; off unless set, since it runs Python files
        from the folder.
    allow_pickled_weights: load ``*.bin`` (pickle) weights; off unless set, since unpickling a file
        can run code. Safetensors load either way.

    What trains:
    freeze: parts (``vision``, ``projector``, ``lm``) or fnmatch patterns of parameter names
        that do not train; the LM's part is its LoRA adapters when ``lora_rank`` > 0.
    freeze_schedule: ``FreezeStage`` list, strictly increasing ``start_step``.
    lora_rank: 0 = off; else LoRA (``peft``) of that rank on ``lora_targets`` of the LM, whose
        own weights then stay frozen.
    lora_alpha / lora_dropout: peft's scaling and dropout of the adapters.
    lora_targets: the LM's module names that get adapters (every linear layer of a block).
    vision_lr / projector_lr / lm_lr: that part's peak learning rate; 0 = ``trainer.lr``.
    activation_checkpointing: recompute each block's activations in the backward pass
        (about a third more compute for activation memory of one block per part).
    """

    name: str = "tiny_vlm"
    family: str = "builtin"
    vision_backbone: str = "vit"
    timm_model: str = ""
    timm_weights: str = ""
    patch_size: int = 16
    patch_stem: str = "linear"
    vision_width: int = 128
    vision_depth: int = 2
    vision_heads: int = 4
    tokens_per_frame: int = 4
    lm_width: int = 128
    lm_depth: int = 2
    lm_heads: int = 4
    max_seq_len: int = 256
    max_text_len: int = 48
    dropout: float = 0.0
    motion_tokens: bool = False
    time_embedding: bool = False
    vision_path: str = ""
    vision_feature_layer: int = -2
    lm_path: str = ""
    projector: str = "mlp2x_gelu"
    attn_implementation: str = "sdpa"
    path: str = ""
    trust_remote_code: bool = False
    allow_pickled_weights: bool = False
    freeze: list[str] = field(default_factory=list)
    freeze_schedule: list[FreezeStage] = field(default_factory=list)
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    vision_lr: float = 0.0
    projector_lr: float = 0.0
    lm_lr: float = 0.0
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        require_choice("model.family", self.family, MODEL_FAMILIES.names())
        require_choice("model.projector", self.projector, PROJECTORS)
        require_choice("model.attn_implementation", self.attn_implementation, ATTENTION_IMPLEMENTATIONS)
        self._check_sources()
        self._check_what_trains()
        require_choice("model.vision_backbone", self.vision_backbone, VISION_BACKBONES)
        require_choice("model.patch_stem", self.patch_stem, PATCH_STEMS)
        if self.vision_backbone == "timm" and not (self.timm_model and self.timm_weights):
            raise ValueError(
                "model.timm_model and model.timm_weights must both be set when "
                "model.vision_backbone=timm (weights are loaded from a local file, never downloaded)"
            )
        for name in (
            "patch_size",
            "vision_width",
            "vision_depth",
            "vision_heads",
            "tokens_per_frame",
            "lm_width",
            "lm_depth",
            "lm_heads",
            "max_seq_len",
            "max_text_len",
        ):
            require_positive(f"model.{name}", getattr(self, name))
        for name, (limit, why) in BOUNDS.items():
            require_at_most(f"model.{name}", getattr(self, name), limit, why)
        if self.vision_width % self.vision_heads:
            raise ValueError(
                f"model.vision_width ({self.vision_width}) must be divisible by "
                f"model.vision_heads ({self.vision_heads})"
            )
        if self.lm_width % self.lm_heads:
            raise ValueError(
                f"model.lm_width ({self.lm_width}) must be divisible by model.lm_heads ({self.lm_heads})"
            )
        if self.patch_stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(
                f"model.patch_size must be a power of two with model.patch_stem=conv (got {self.patch_size})"
            )
        side = math.isqrt(self.tokens_per_frame)
        if side * side != self.tokens_per_frame:
            raise ValueError(
                f"model.tokens_per_frame must be a square number (pooled as a k x k grid; "
                f"got {self.tokens_per_frame})"
            )
        require_range("model.dropout", self.dropout, 0.0, 0.9)

    def _check_sources(self) -> None:
        """The folders a Hugging Face family loads from are named; LoRA needs one of them."""
        if self.pretrained_parts:
            for name in ("vision_path", "lm_path"):
                if not getattr(self, name):
                    raise ValueError(
                        f"model.{name} must be set with model.family=hf (a local Hugging Face model "
                        "folder, or a hub id already in the local Hugging Face cache)"
                    )
        elif self.pretrained_model and not self.path:
            raise ValueError(
                "model.path must be set with model=pretrained (a folder written by save_pretrained, "
                "or a hub id already in the local Hugging Face cache)"
            )
        elif self.lora_rank and not self.hub_model:
            raise ValueError(
                "model.lora_rank applies to Hugging Face LMs (model=hf_vlm or model=pretrained); the "
                "builtin LM trains in full"
            )

    def _check_what_trains(self) -> None:
        require_parts_or_patterns("model.freeze", self.freeze)
        previous = -1
        for i, stage in enumerate(self.freeze_schedule):
            where = f"model.freeze_schedule[{i}]"
            if stage.start_step <= previous:
                raise ValueError(
                    f"{where}.start_step ({stage.start_step}) must be greater than the previous "
                    f"stage's ({previous}): stages are in strictly increasing step order"
                )
            if stage.start_step < 0:
                raise ValueError(f"{where}.start_step must be non-negative (got {stage.start_step})")
            if not (stage.freeze or stage.unfreeze):
                raise ValueError(f"{where} changes nothing: give it a freeze or unfreeze list")
            require_parts_or_patterns(f"{where}.freeze", stage.freeze)
            require_parts_or_patterns(f"{where}.unfreeze", stage.unfreeze)
            previous = stage.start_step
        if self.lora_rank < 0:
            raise ValueError(f"model.lora_rank must be non-negative (0 = no LoRA; got {self.lora_rank})")
        if self.lora_rank:
            require_positive("model.lora_alpha", self.lora_alpha)
            require_range("model.lora_dropout", self.lora_dropout, 0.0, 0.9)
            if not self.lora_targets:
                raise ValueError("model.lora_targets must name at least one module with model.lora_rank > 0")
        for name in ("vision_lr", "projector_lr", "lm_lr"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"model.{name} must be finite and non-negative (0 = trainer.lr; got {value})"
                )

    @property
    def pretrained_parts(self) -> bool:
        """Whether the tower and the LM come from Hugging Face folders (``vision_path``,
        ``lm_path``): their files then say the frame geometry, the pixel statistics and the
        tokenizer, which the data and pre-flight code read from there."""
        return self.family == PRETRAINED_PARTS_FAMILY

    @property
    def pretrained_model(self) -> bool:
        """Whether the whole VLM comes from one Hugging Face folder (``model.path``), which then
        says the frame geometry, the pixel statistics and the tokenizer."""
        return self.family == PRETRAINED_MODEL_FAMILY

    @property
    def hub_model(self) -> bool:
        """Whether the model is made of Hugging Face weights (``hf`` or ``pretrained``): its own
        tokenizer then frames the text, and LoRA applies."""
        return self.pretrained_parts or self.pretrained_model

    def part_lr(self, part: str, default: float) -> float:
        """The peak learning rate of ``part``: its own ``model.<part>_lr``, else ``default``."""
        own: float = getattr(self, f"{part}_lr")
        return own or default
