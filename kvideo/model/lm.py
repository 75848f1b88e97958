"""The causal decoder LM, plus the transformer pieces it shares with the vision encoder.

The LM reads one sequence ``[visual tokens | text tokens]``: the visual prefix comes from the
projector already at the LM width, so the LM only embeds text ids. Attention goes through
``F.scaled_dot_product_attention`` with a caller-built boolean mask, because the mask is not
just causal: visual tokens of padded frames must be hidden from every query, and that is
per-sample (``VideoLanguageModel`` builds it once per forward and every block reuses it).

Everything here avoids data-dependent Python control flow so ``torch.compile`` can trace it
without graph breaks; shape checks are fine (shapes are static or guarded by the compiler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kvideo.model.packing import PackedRows, block_causal_mask, pack, unpack
from kvideo.model.sequence import splice, text_positions

INIT_STD = 0.02


def init_weights(module: nn.Module) -> None:
    """GPT/ViT-style init: truncated normal(0.02) weights, zero biases, identity LayerNorms.

    Used via ``module.apply(init_weights)``. Small weights keep the residual stream close to the
    embeddings at step 0, which is what makes training from scratch stable without warm tricks.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_position_table(table: nn.Parameter) -> None:
    """Learned position tables get the same small truncated normal as the other embeddings."""
    nn.init.trunc_normal_(table, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)


class Attention(nn.Module):
    """Multi-head self-attention over SDPA (fused kernels on CUDA, no score matrix in Python)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``x`` (B, S, D); ``attn_mask`` bool (B, 1, S, S) with True = may attend, or None."""
        b, s, d = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(b, s, d)
        out: Tensor = self.proj_drop(self.proj(y))
        return out


class MLP(nn.Module):
    """The usual 4x GELU feed-forward."""

    def __init__(self, width: int, dropout: float = 0.0, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, ratio * width)
        self.fc2 = nn.Linear(ratio * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.drop(self.fc2(F.gelu(self.fc1(x))))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: pre-norm keeps a clean residual path, so small models train
    from scratch at a fixed learning rate without warmup-sensitive blowups."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        out: Tensor = x + self.mlp(self.norm2(x))
        return out


def run_blocks(blocks: nn.ModuleList, x: Tensor, attn_mask: Tensor | None) -> Tensor:
    """Apply ``blocks`` in order (``model.activation_checkpointing`` wraps each block itself:
    ``kvideo.model.blocks.recompute_in_backward``)."""
    for block in blocks:
        x = block(x, attn_mask)
    return x


class CausalLM(nn.Module):
    """Decoder-only LM over ``[visual prefix | text]``.

    Positions are one learned table of ``max_seq_len`` rows shared by the visual prefix and the
    text, which is why the compose-time token budget is ``max_frames * tokens_per_frame +
    max_text_len <= max_seq_len``. The head is tied to the token embedding by default: with a
    small vocabulary (bytes) it saves little, but it is the standard choice and keeps the output
    space aligned with the input space early in training.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        width: int,
        depth: int,
        heads: int,
        max_seq_len: int,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.tok_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(max_seq_len, width))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.apply(init_weights)
        init_position_table(self.pos_embed)
        if tie_embeddings:
            self.head.weight = self.tok_embed.weight

    def forward(
        self,
        prefix: Tensor,
        input_ids: Tensor,
        attn_mask: Tensor | None,
        visual_at: Tensor | None = None,
        packed: PackedRows | None = None,
    ) -> Tensor:
        """Return logits (B, L, V) for the text positions only.

        ``prefix`` (B, P, D) visual embeddings, spliced after each sample's first ``visual_at``
        text tokens (None: in front; ``kvideo.model.sequence``); ``input_ids`` (B, L);
        ``attn_mask`` bool (B, 1, P + L, P + L), True = may attend. The head runs on text positions only: the
        visual positions never predict anything, so projecting them to the vocabulary would be
        wasted work (and memory, at ``B * P * V``).

        ``packed`` (``data.packing``; then ``attn_mask`` is unused): the blocks run on the real
        tokens packed into rows (``kvideo.model.packing``), each with the position it has in the
        padded sequence, so a sample's logits are the padded batch's; those of its padding are
        the head's output for a zero state and carry no label.
        """
        text = self.tok_embed(input_ids)
        prefix_len = prefix.shape[1]
        seq_len = prefix_len + text.shape[1]
        if seq_len > self.max_seq_len:
            raise ValueError(
                f"sequence of {prefix_len} visual + {text.shape[1]} text tokens = {seq_len} exceeds "
                f"model.max_seq_len ({self.max_seq_len})"
            )
        # Keep the residual stream in the embedding dtype (fp32 under autocast): autocast
        # already runs the matmuls in bf16, and an fp32 stream avoids accumulating rounding.
        x = splice(text, prefix.to(text.dtype), visual_at) + self.pos_embed[:seq_len]
        x = self.drop(x)
        if packed is None:
            x = run_blocks(self.blocks, x, attn_mask)
        else:
            x = unpack(run_blocks(self.blocks, pack(x, packed), block_causal_mask(packed)), packed)
        if visual_at is None:
            x = x[:, prefix_len:]
        else:
            where = text_positions(visual_at, text.shape[1], prefix_len, text.shape[0], x.device)
            x = x.gather(1, where[..., None].expand(*where.shape, x.shape[-1]))
        logits: Tensor = self.head(self.norm(x))
        return logits
