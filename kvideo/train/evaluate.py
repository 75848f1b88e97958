"""Validation: caption loss, and per-attribute caption accuracy where the dataset defines it.

Accuracy is a forced choice that isolates one attribute at a time. The dataset says which
captions to compare (its ``AttributeScorer``, registered in ``kvideo.data.scoring`` under its
``video.dataset_type``): for each clip, a ``CandidateSet`` whose captions each state one option
of one attribute. The model is right on an attribute when the caption with the true option has
the lowest caption NLL; chance is ``1 / len(options)``. A dataset without a scorer gets the loss
only. Nothing here knows any dataset's captions.

All candidates of a batch go through the model together: each clip's frames are repeated
once per candidate caption (the true caption is shared by the attribute questions),
in chunks of at most ``max_rows`` rows to bound memory.

A sharded model (FSDP) gathers its parameters in every forward, a collective: there every rank
runs the same forwards in lockstep, a batch without a clip to score included, and the candidate
chunks are padded to the largest count over the ranks with stand-in rows whose numbers are
dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from kvideo.data.batch import optional_inputs
from kvideo.data.scoring import AttributeScorer, CandidateSet, attribute_scorers
from kvideo.train.distributed import DistEnv, all_gather_objects, all_reduce_sum
from kvideo.train.fsdp import is_sharded


def _attribute_options(scorers: list[AttributeScorer]) -> dict[str, int]:
    """Attribute -> number of options, over ``scorers`` in order (the first one naming an
    attribute sets its chance). The same on every rank: it fixes the reduced vector's shape."""
    options: dict[str, int] = {}
    for scorer in scorers:
        for attr, values in scorer.attributes.items():
            options.setdefault(attr, len(values))
    return options


def _candidates(scorers: list[AttributeScorer], caption: str) -> CandidateSet | None:
    for scorer in scorers:
        cands = scorer.candidate_set(caption)
        if cands is not None:
            return cands
    return None


class _Encoder:
    """Tokenizes each candidate caption once: the same candidates recur across clips."""

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
    frame_times: torch.Tensor | None = None,
    frame_region: torch.Tensor | None = None,
    max_rows: int,
    autocast: Callable[[], contextlib.AbstractContextManager[None]],
) -> torch.Tensor:
    """Summed caption NLL of each (clip ``rows[i]``, caption ``input_ids[i]``) pair, as float (N,)."""
    device = frames.device
    index = torch.as_tensor(rows, dtype=torch.long, device=device)
    out = []
    for start in range(0, len(rows), max_rows):
        sel = index[start : start + max_rows]
        with autocast():
            result = model(
                frames.index_select(0, sel),
                frame_mask.index_select(0, sel),
                input_ids[start : start + max_rows].to(device),
                labels[start : start + max_rows].to(device),
                frame_times=None
                if frame_times is None
                else frame_times.index_select(0, sel.to(frame_times.device)),
                **({} if frame_region is None else {"frame_region": frame_region.index_select(0, sel)}),
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
    autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    dataset_type: str,
) -> dict[str, Any]:
    """Validation loss and per-attribute accuracy, reduced over ranks.

    ``dataset_type`` (``video.dataset_type``) picks the attribute questions: its registered
    scorer, or none (loss only).

    ``model`` should be the unwrapped module (a DDP forward would wait for the other ranks'
    backward) or a sharded one (every rank then runs the same forwards, see the module
    docstring). ``batches`` come from a non-shuffled loader
    sharded as ``order[rank::world_size]`` and padded by wrapping, so this rank's ``j``-th
    sample sits at global position ``rank + j * world_size``, and positions
    ``>= num_samples`` are padding duplicates that are not counted.
    Bad samples (``skip_reason != ""``) count neither in the loss nor in the accuracy.
    """
    was_training = model.training
    model.eval()
    encode = _Encoder(tokenizer, prompt, max_text_len)
    scorers = attribute_scorers(dataset_type)
    options = _attribute_options(scorers)
    attributes = list(options)
    nll_sum = tok_sum = 0.0
    clips: float  # ints while counting; the float64 all-reduce below returns them as floats
    skipped: float
    clips = skipped = 0
    correct = dict.fromkeys(attributes, 0.0)
    counted = dict.fromkeys(attributes, 0.0)
    position = env.rank
    lockstep = is_sharded(model) and env.distributed
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
            if not valid and not lockstep:
                continue
            frames, frame_mask, frame_times = batch["frames"], batch["frame_mask"], batch["frame_times"]
            with autocast():
                out = model(
                    frames,
                    frame_mask,
                    batch["input_ids"],
                    batch["labels"],
                    frame_times=frame_times,
                    **optional_inputs(batch),
                )
            keep = torch.as_tensor(valid, dtype=torch.long, device=out["nll"].device)
            nll_sum += float(out["nll"].float().index_select(0, keep).sum())
            tok_sum += float(out["ntokens"].index_select(0, keep).sum())
            clips += len(valid)

            rows: list[int] = []
            texts: list[str] = []
            sets: list[tuple[int, CandidateSet]] = []  # (offset of its first candidate row, set)
            for i in valid:
                cands = _candidates(scorers, batch["caption"][i])
                if cands is None:
                    continue
                sets.append((len(rows), cands))
                rows += [i] * len(cands.captions)
                texts += cands.captions
            if lockstep:
                chunks = max(all_gather_objects(-(-len(rows) // max_rows), env))
                stand_ins = max(0, (chunks - 1) * max_rows + 1 - len(rows)) if chunks else 0
                rows += [0] * stand_ins
                texts += [batch["caption"][0]] * stand_ins
            if not rows:
                continue
            encoded = [encode(t) for t in texts]
            ids = torch.stack([e[0] for e in encoded])
            labels = torch.stack([e[1] for e in encoded])
            nll = score_candidates(
                model,
                frames,
                frame_mask,
                rows,
                ids,
                labels,
                frame_times=frame_times,
                frame_region=batch.get("frame_region"),
                max_rows=max_rows,
                autocast=autocast,
            ).cpu()
            for offset, cands in sets:
                for attr in cands.groups:
                    group = torch.tensor(cands.groups[attr]) + offset
                    predicted = int(torch.argmin(nll[group]))
                    correct[attr] += float(predicted == cands.truth[attr])
                    counted[attr] += 1
    finally:
        model.train(was_training)

    totals = all_reduce_sum(
        [nll_sum, tok_sum, clips, skipped]
        + [correct[a] for a in attributes]
        + [counted[a] for a in attributes],
        env,
    )
    nll_sum, tok_sum, clips, skipped = totals[:4]
    n_attr = len(attributes)
    result: dict[str, Any] = {
        "val_loss": nll_sum / tok_sum if tok_sum else float("nan"),
        "val_clips": int(clips),
        "val_skipped": int(skipped),
    }
    for k, attr in enumerate(attributes):
        right, total = totals[4 + k], totals[4 + n_attr + k]
        if total:
            result[f"acc_{attr}"] = right / total
            result[f"chance_{attr}"] = 1.0 / options[attr]
    return result
