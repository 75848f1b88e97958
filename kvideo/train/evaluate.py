"""Validation: caption loss, and per-attribute caption accuracy on template captions.

Accuracy is a forced choice that isolates one attribute at a time: for a clip captioned
"a red circle moves left", the colour question scores "a {c} circle moves left" for every
colour c and the model is right when the true colour has the lowest caption NLL. Chance is
``1 / len(options)``, so the numbers say directly whether the model *looks* at colour, shape
and motion, which the loss alone hides (a model can lower the loss on the template words).

All candidates of a batch go through the model together: each clip's frames are repeated
once per candidate caption (the true caption is shared by the three attribute questions),
in chunks of at most ``max_rows`` rows to bound memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kvideo.data.captions import ATTRIBUTES, caption_for, parse_caption
from kvideo.train.distributed import DistEnv, all_reduce_sum

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)


@dataclass(frozen=True)
class CandidateSet:
    """One clip's candidate captions. ``captions[0]`` is the true caption; ``groups[attr]``
    lists, per option of ``attr``, the index into ``captions`` scoring that option, and
    ``truth[attr]`` the position of the true option in that list."""

    captions: tuple[str, ...]
    groups: dict[str, tuple[int, ...]]
    truth: dict[str, int]


def candidate_set(caption: str) -> CandidateSet | None:
    """Candidates differing from ``caption`` in exactly one attribute; ``None`` when the
    caption is not a template caption (then only the loss is measured)."""
    parsed = parse_caption(caption)
    if parsed is None:
        return None
    captions = [caption_for(**parsed)]
    groups: dict[str, tuple[int, ...]] = {}
    truth: dict[str, int] = {}
    for attr, options in ATTRIBUTES.items():
        idxs = []
        for option in options:
            if option == parsed[attr]:
                idxs.append(0)
            else:
                captions.append(caption_for(**{**parsed, attr: option}))
                idxs.append(len(captions) - 1)
        groups[attr] = tuple(idxs)
        truth[attr] = options.index(parsed[attr])
    return CandidateSet(tuple(captions), groups, truth)


class _Encoder:
    """Tokenizes candidate captions once: the corpus has few distinct captions."""

    def __init__(self, tokenizer: Any, prompt: str, max_len: int) -> None:
        self.tokenizer, self.prompt, self.max_len = tokenizer, prompt, max_len
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._cache.get(caption)
        if hit is None:
            ids, labels = self.tokenizer.encode_example(self.prompt, caption, self.max_len)
            hit = (torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(labels, dtype=torch.long))
            self._cache[caption] = hit
        return hit


def score_candidates(
    model: nn.Module,
    frames: torch.Tensor,
    frame_mask: torch.Tensor,
    rows: list[int],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    *,
    max_rows: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> torch.Tensor:
    """Summed caption NLL of each (clip ``rows[i]``, caption ``input_ids[i]``) pair, as float (N,)."""
    device = frames.device
    index = torch.as_tensor(rows, dtype=torch.long, device=device)
    out = []
    for start in range(0, len(rows), max_rows):
        sel = index[start:start + max_rows]
        with autocast():
            result = model(
                frames.index_select(0, sel),
                frame_mask.index_select(0, sel),
                input_ids[start:start + max_rows].to(device),
                labels[start:start + max_rows].to(device),
            )
        out.append(result["nll"].float())
    return torch.cat(out) if out else torch.zeros(0, device=device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    *,
    tokenizer: Any,
    prompt: str,
    max_text_len: int,
    env: DistEnv,
    num_samples: int,
    max_batches: int = 0,
    max_rows: int = 64,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Any]:
    """Validation loss and per-attribute accuracy, reduced over ranks.

    ``model`` should be the unwrapped module: ranks may see different numbers of batches, and
    a DDP forward would wait for the others. ``batches`` come from a non-shuffled loader
    sharded as ``order[rank::world_size]`` and padded by wrapping, so this rank's ``j``-th
    sample sits at global position ``rank + j * world_size``, and positions
    ``>= num_samples`` are padding duplicates that are not counted.
    Bad samples (``skip_reason != ""``) count neither in the loss nor in the accuracy.
    """
    was_training = model.training
    model.eval()
    encode = _Encoder(tokenizer, prompt, max_text_len)
    nll_sum = tok_sum = 0.0
    clips = skipped = 0
    correct = dict.fromkeys(ATTRIBUTE_NAMES, 0.0)
    counted = dict.fromkeys(ATTRIBUTE_NAMES, 0.0)
    position = env.rank
    try:
        for batch_no, batch in enumerate(batches):
            if max_batches and batch_no >= max_batches:
                break
            b = len(batch["skip_reason"])
            valid = []
            for i in range(b):
                real = position < num_samples
                position += env.world_size
                if not real:
                    continue
                if batch["skip_reason"][i]:
                    skipped += 1
                    continue
                valid.append(i)
            if not valid:
                continue
            frames, frame_mask = batch["frames"], batch["frame_mask"]
            with autocast():
                out = model(frames, frame_mask, batch["input_ids"], batch["labels"])
            keep = torch.as_tensor(valid, dtype=torch.long, device=out["nll"].device)
            nll_sum += float(out["nll"].float().index_select(0, keep).sum())
            tok_sum += float(out["ntokens"].index_select(0, keep).sum())
            clips += len(valid)

            rows: list[int] = []
            texts: list[str] = []
            sets: list[tuple[int, CandidateSet]] = []  # (offset of its first candidate row, set)
            for i in valid:
                cands = candidate_set(batch["caption"][i])
                if cands is None:
                    continue
                sets.append((len(rows), cands))
                rows += [i] * len(cands.captions)
                texts += cands.captions
            if not rows:
                continue
            encoded = [encode(t) for t in texts]
            ids = torch.stack([e[0] for e in encoded])
            labels = torch.stack([e[1] for e in encoded])
            nll = score_candidates(
                model, frames, frame_mask, rows, ids, labels, max_rows=max_rows, autocast=autocast
            ).cpu()
            for offset, cands in sets:
                for attr in ATTRIBUTE_NAMES:
                    group = torch.tensor(cands.groups[attr]) + offset
                    predicted = int(torch.argmin(nll[group]))
                    correct[attr] += float(predicted == cands.truth[attr])
                    counted[attr] += 1
    finally:
        model.train(was_training)

    totals = all_reduce_sum(
        [nll_sum, tok_sum, clips, skipped]
        + [correct[a] for a in ATTRIBUTE_NAMES] + [counted[a] for a in ATTRIBUTE_NAMES],
        env,
    )
    nll_sum, tok_sum, clips, skipped = totals[:4]
    n_attr = len(ATTRIBUTE_NAMES)
    result: dict[str, Any] = {
        "val_loss": nll_sum / tok_sum if tok_sum else float("nan"),
        "val_clips": int(clips),
        "val_skipped": int(skipped),
    }
    for k, attr in enumerate(ATTRIBUTE_NAMES):
        right, total = totals[4 + k], totals[4 + n_attr + k]
        if total:
            result[f"acc_{attr}"] = right / total
            result[f"chance_{attr}"] = 1.0 / len(ATTRIBUTES[attr])
    return result
