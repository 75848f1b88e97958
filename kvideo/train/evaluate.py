"""Validation: caption loss, and per-attribute caption accuracy where the dataset defines it.

Accuracy is a forced choice that isolates one attribute at a time. The dataset says which
captions to compare (its ``AttributeScorer``, registered in ``kvideo.data.scoring`` under its
``video.dataset_type``): for each clip, a ``CandidateSet`` whose captions each state one option
of one attribute. The model is right on an attribute when the caption with the true option has
the lowest caption NLL; chance is ``1 / len(options)``. A dataset without a scorer gets the loss
only. Nothing here knows any dataset's captions.

All candidates of a batch go through the model together, in chunks of at most ``max_rows``
rows to bound memory (the true caption is shared by the attribute questions). A model that
``takes_clip_of_row`` gets each clip's frames once and which clip each candidate row reads: its
vision part runs once per clip, not once per candidate, and the builtin LM also reads the clip's
shared prefix once (``kvideo.model.packing.shared_prefix_layout``).

An FSDP model (FSDP) gathers its parameters in every forward, a collective: there every rank
runs the same forwards in lockstep, a batch without a clip to score included, and the candidate
chunks are padded to the largest count over the ranks with stand-in rows whose numbers are
dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kvideo.data.batch import forward_inputs
from kvideo.data.mixture import dataset_types
from kvideo.data.scoring import AttributeScorer, CandidateSet, attribute_scorers
from kvideo.data.tokenizer import encode_caption
from kvideo.train.distributed import DistEnv, all_gather_objects, all_reduce_sum


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


class CaptionEncoder:
    """A caption's ``(input_ids, labels, visual_at, text_len)`` after the prompt, as the loss
    reads them (``encode_caption``; ``visual_at`` matters where captions are conversations, 0
    otherwise); each candidate caption is tokenized once (the same candidates recur across clips)."""

    def __init__(self, tokenizer: Any, prompt: str, max_len: int) -> None:
        self.tokenizer, self.prompt, self.max_len = tokenizer, prompt, max_len
        self.conversational = bool(getattr(tokenizer, "captions_as_conversations", False))
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, int, int]] = {}

    def __call__(self, caption: str) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        hit = self._cache.get(caption)
        if hit is None:
            text = encode_caption(self.tokenizer, self.prompt, caption, self.max_len)
            ids = torch.as_tensor(text.input_ids, dtype=torch.long)
            hit = (ids, torch.as_tensor(text.labels, dtype=torch.long), text.visual_at, text.text_len)
            self._cache[caption] = hit
        return hit


def score_candidates(
    model: nn.Module,
    batch: dict[str, Any],
    rows: list[int],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    *,
    visual_at: torch.Tensor | None = None,
    text_len: torch.Tensor | None = None,
    visual: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_rows: int,
    autocast: Callable[[], contextlib.AbstractContextManager[None]],
) -> torch.Tensor:
    """Summed caption NLL of each (clip ``rows[i]`` of ``batch``, caption ``input_ids[i]``) pair,
    as float (N,). ``visual_at`` (N,): where each caption's video goes, when captions are
    conversations; ``text_len`` (N,): each caption's tokens before its padding; ``visual``: the
    batch's visual tokens and keys from its loss forward, for a model that ``takes_clip_of_row``
    (its vision part then does not run again)."""
    frames, frame_times, frame_region = batch["frames"], batch["frame_times"], batch.get("frame_region")
    device = frames.device
    index = torch.as_tensor(rows, dtype=torch.long, device=device)
    per_clip = bool(getattr(model, "takes_clip_of_row", False))
    out = []
    for start in range(0, len(rows), max_rows):
        sel = index[start : start + max_rows]
        extra: dict[str, Any] = {}
        if per_clip:  # each clip's frames once; the model reads them for each of its rows
            sel, extra["clip_of_row"] = torch.unique(sel, return_inverse=True)
            if visual is not None:
                extra["visual"] = (visual[0].index_select(0, sel), visual[1].index_select(0, sel))
        if frame_region is not None:
            extra["frame_region"] = frame_region.index_select(0, sel)
        for key in ("picture", "picture_size"):  # a released VLM's image route (optional_inputs)
            if key in batch:
                extra[key] = batch[key].index_select(0, sel.to(batch[key].device))
        if visual_at is not None:
            extra["visual_at"] = visual_at[start : start + max_rows].to(device)
        if text_len is not None:
            extra["text_len"] = text_len[start : start + max_rows].to(device)
        with autocast():
            result = model(
                frames.index_select(0, sel),
                batch["frame_mask"].index_select(0, sel),
                input_ids[start : start + max_rows].to(device),
                labels[start : start + max_rows].to(device),
                frame_times=frame_times.index_select(0, sel.to(frame_times.device)),
                **extra,
            )
        out.append(result["nll"].float())
    return torch.cat(out) if out else torch.zeros(0, device=device)


@dataclass(frozen=True)
class ScoredSplit:
    """What ``evaluate`` knows of the split it scores.

    num_samples: its size (``_Tally`` says why).
    dataset_types: whose registered attribute scorers ask the questions (none: loss only):
        ``video.dataset_type``, or the types of a mixture's sources.
    sources: a mixture's source names, each scored on its own as ``val_loss/<name>`` (the
        batches then name each clip's ``source``).
    """

    num_samples: int
    dataset_types: tuple[str, ...]
    sources: tuple[str, ...] = ()

    @classmethod
    def of(cls, dataset: Any) -> ScoredSplit:
        """A built dataset's (``kvideo.data.loader.build_dataset``)."""
        settings, mixture = dataset.settings, dataset.mixture
        kinds = dataset_types(settings.video, settings.data)
        return cls(len(dataset), tuple(kinds), mixture.names if mixture else ())


class _Tally:
    """One rank's sums over the validation batches, reduced over the ranks by ``result``.

    ``batches`` come from a non-shuffled loader split as ``order[rank::world_size]`` and padded
    by wrapping, so this rank's ``j``-th sample sits at global position ``rank + j * world_size``,
    and positions ``>= num_samples`` are padding duplicates that are not counted.
    """

    def __init__(
        self, options: dict[str, int], env: DistEnv, num_samples: int, sources: Sequence[str] = ()
    ) -> None:
        self.options, self.attributes = options, list(options)
        self.env, self.num_samples = env, num_samples
        self.position = env.rank
        self.nll_sum = self.tok_sum = 0.0
        self.sources = list(sources)  # data.mixture's: each one's loss too
        self.source_nll = dict.fromkeys(self.sources, 0.0)
        self.source_tok = dict.fromkeys(self.sources, 0.0)
        # ints while counting; the float64 all-reduce returns them as floats
        self.clips: float = 0
        self.skipped: float = 0
        self.correct = dict.fromkeys(self.attributes, 0.0)
        self.counted = dict.fromkeys(self.attributes, 0.0)

    def valid_rows(self, batch: dict[str, Any]) -> list[int]:
        """The batch rows that count: real samples (not padding) that were not skipped."""
        valid = []
        for i, reason in enumerate(batch["skip_reason"]):
            real = self.position < self.num_samples
            self.position += self.env.world_size
            if not real:
                continue
            if reason:
                self.skipped += 1
                continue
            valid.append(i)
        return valid

    def add_loss(self, out: dict[str, torch.Tensor], valid: list[int], sources: list[str] | None) -> None:
        """The valid rows' loss sums; per mixture source too, given each row's ``sources``."""
        nll, ntokens = out["nll"].float().cpu(), out["ntokens"].float().cpu()
        self.nll_sum += float(nll[valid].sum())
        self.tok_sum += float(ntokens[valid].sum())
        self.clips += len(valid)
        if sources is not None and self.sources:
            for i in valid:
                self.source_nll[sources[i]] += float(nll[i])
                self.source_tok[sources[i]] += float(ntokens[i])

    def add_answers(self, sets: list[tuple[int, CandidateSet]], nll: torch.Tensor) -> None:
        """Each question's answer: the option whose caption has the lowest NLL."""
        for offset, cands in sets:
            for attr in cands.groups:
                group = torch.tensor(cands.groups[attr]) + offset
                predicted = int(torch.argmin(nll[group]))
                self.correct[attr] += float(predicted == cands.truth[attr])
                self.counted[attr] += 1

    def result(self) -> dict[str, Any]:
        """The metrics over every rank (a collective)."""
        attributes = self.attributes
        totals = all_reduce_sum(
            [self.nll_sum, self.tok_sum, self.clips, self.skipped]
            + [self.correct[a] for a in attributes]
            + [self.counted[a] for a in attributes]
            + [self.source_nll[s] for s in self.sources]
            + [self.source_tok[s] for s in self.sources],
            self.env,
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
                result[f"chance_{attr}"] = 1.0 / self.options[attr]
        at = 4 + 2 * n_attr
        for k, source in enumerate(self.sources):
            nll, tokens = totals[at + k], totals[at + len(self.sources) + k]
            result[f"val_loss/{source}"] = nll / tokens if tokens else float("nan")
        return result


def _candidate_rows(
    scorers: list[AttributeScorer],
    captions: list[str],
    valid: list[int],
    *,
    lockstep: bool,
    max_rows: int,
    env: DistEnv,
) -> tuple[list[int], list[str], list[tuple[int, CandidateSet]]]:
    """``(rows, texts, sets)``: the clip row and the caption of every candidate to score, and
    each clip's ``CandidateSet`` with the offset of its first candidate. In lockstep the rows are
    padded with stand-ins to the most chunks of any rank."""
    rows: list[int] = []
    texts: list[str] = []
    sets: list[tuple[int, CandidateSet]] = []
    for i in valid:
        cands = _candidates(scorers, captions[i])
        if cands is None:
            continue
        sets.append((len(rows), cands))
        rows += [i] * len(cands.captions)
        texts += cands.captions
    if lockstep:
        chunks = max(all_gather_objects(-(-len(rows) // max_rows), env))
        stand_ins = max(0, (chunks - 1) * max_rows + 1 - len(rows)) if chunks else 0
        rows += [0] * stand_ins
        texts += [captions[0]] * stand_ins
    return rows, texts, sets


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    *,
    encoder: CaptionEncoder,
    split: ScoredSplit,
    env: DistEnv,
    max_batches: int = 0,
    max_rows: int = 64,
    autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    lockstep: bool = False,
) -> dict[str, Any]:
    """Validation loss and per-attribute accuracy, reduced over ranks.

    ``encoder`` tokenizes the candidate captions after the prompt; ``split`` says what is scored
    (``ScoredSplit``).

    ``model`` should be the unwrapped module (a DDP forward would wait for the other ranks'
    backward) or a sharded one, with ``lockstep`` (``Strategy.lockstep_forwards``: every rank
    then runs the same forwards, see the module docstring).
    Bad samples (``skip_reason != ""``) count neither in the loss nor in the accuracy.
    """
    was_training = model.training
    model.eval()
    scorers = [scorer for kind in split.dataset_types for scorer in attribute_scorers(kind)]
    tally = _Tally(_attribute_options(scorers), env, split.num_samples, split.sources)
    try:
        for batch_no, batch in enumerate(batches):
            if max_batches and batch_no >= max_batches:
                break
            valid = tally.valid_rows(batch)
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
                    **forward_inputs(batch),
                )
            tally.add_loss(out, valid, batch.get("source"))
            rows, texts, sets = _candidate_rows(
                scorers, batch["caption"], valid, lockstep=lockstep, max_rows=max_rows, env=env
            )
            if not rows:
                continue
            encoded = [encoder(t) for t in texts]
            nll = score_candidates(
                model,
                batch,
                rows,
                torch.stack([e[0] for e in encoded]),
                torch.stack([e[1] for e in encoded]),
                visual_at=torch.tensor([e[2] for e in encoded]) if encoder.conversational else None,
                text_len=torch.tensor([e[3] for e in encoded]),
                visual=(out["visual_tokens"], out["visual_keys"]) if "visual_tokens" in out else None,
                max_rows=max_rows,
                autocast=autocast,
            ).cpu()
            tally.add_answers(sets, nll)
    finally:
        model.train(was_training)
    return tally.result()
