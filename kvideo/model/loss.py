"""The caption loss both model families return: shifted cross-entropy over the caption tokens
(the label convention is in ``kvideo.model.vlm``'s module docstring)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kvideo.data.tokenizer import IGNORE_INDEX  # the labels the tokenizer writes


def caption_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Shifted cross-entropy: ``(loss, nll (B,), ntokens (B,))`` with logits[:, i] -> labels[:, i+1].

    Computed in fp32 whatever the autocast dtype: bf16 log-softmax over the vocabulary loses
    enough precision to blur the NLL differences the evaluator ranks candidates by.
    """
    pred = logits[:, :-1].float()
    targets = labels[:, 1:]
    token_nll = F.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)  # exactly 0 at ignored positions
    nll = token_nll.sum(dim=1)
    ntokens = (targets != IGNORE_INDEX).sum(dim=1)
    loss = nll.sum() / ntokens.sum().clamp(min=1)
    return loss, nll, ntokens


def with_loss(logits: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
    """The models' output dict: ``logits``, plus ``loss``, ``nll``, ``ntokens`` given labels."""
    out = {"logits": logits}
    if labels is not None:
        out["loss"], out["nll"], out["ntokens"] = caption_nll(logits, labels)
    return out
