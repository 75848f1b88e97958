"""Tiny Hugging Face parts, made the way a user's folders are: transformers' own config classes,
random weights, ``save_pretrained``. Loading them runs the real offline ``from_pretrained`` path.

The tower is SigLIP-shaped (a two-tower SigLIP folder, as published checkpoints are, unless
``vision_only``), the LM Qwen2-shaped, and the tokenizer a byte-level BPE trained on the sample
corpus's words with a ChatML template (Qwen2's format).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from kvideo.data.datasets.sample.captions import all_captions

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def save_tokenizer(folder: Path, *, chat_template: bool = True, bare: bool = False) -> int:
    """A BPE tokenizer that knows the sample captions' words; returns its vocabulary size.

    ``bare``: the least an LM's tokenizer may have (GPT-2's kind): an EOS, and no BOS, pad token
    or chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = SPECIAL_TOKENS[:1] if bare else SPECIAL_TOKENS
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    text = [*all_captions(), "Describe the video.", "user assistant system"]
    tok.train_from_iterator(text * 4, trainer)
    if bare:
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    else:
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        if chat_template:
            hf.chat_template = CHATML
    hf.save_pretrained(folder)
    return len(hf)


@contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """The same random weights in every session, whatever ran first: a test's margin then holds
    for the weights it was measured on, and the caller's random state is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def save_tiny_lm(
    folder: Path,
    *,
    width: int = 64,
    layers: int = 2,
    max_positions: int = 512,
    chat_template: bool = True,
    bare_tokenizer: bool = False,
) -> Path:
    """A Qwen2-shaped causal LM (grouped-query attention, tied embeddings) and its tokenizer
    (``bare_tokenizer``: ``save_tokenizer``'s ``bare``)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocab = save_tokenizer(folder, chat_template=chat_template, bare=bare_tokenizer)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
    )
    with seeded():
        Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def save_tiny_tower(
    folder: Path,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    width: int = 64,
    layers: int = 2,
    vision_only: bool = False,
) -> Path:
    """A SigLIP-shaped tower with its image processor config (mean/std 0.5)."""
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    vision = SiglipVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    if vision_only:
        with seeded():
            SiglipVisionModel(vision).save_pretrained(folder)
    else:
        text = {
            "hidden_size": width,
            "intermediate_size": 4 * width,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "vocab_size": 64,
            "max_position_embeddings": 16,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        }
        with seeded():
            SiglipModel(SiglipConfig(vision_config=vision.to_dict(), text_config=text)).save_pretrained(
                folder
            )
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def save_tiny_parts(root: Path, **lm: Any) -> tuple[Path, Path]:
    """``(vision_path, lm_path)`` of a tiny tower (64 px, 16 px patches) and a tiny LM."""
    return save_tiny_tower(root / "tower"), save_tiny_lm(root / "lm", **lm)


def hf_cli_overrides(vision: Path, lm: Path) -> list[str]:
    """``train.py`` overrides that select these parts at the tower's frame size."""
    return [
        "model=hf_vlm",
        f"model.vision_path={vision}",
        f"model.lm_path={lm}",
        "video.frame_size=64",
        "model.tokens_per_frame=4",
    ]


def cache_snapshot(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay ``source`` out as the Hugging Face cache does after ``hf download repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
