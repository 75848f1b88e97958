"""Evaluate a trained run on a split: caption loss and forced-choice attribute accuracy (the
validation the trainer runs), plus generated captions and what they are worth.

Metrics of the generated captions:

* ``gen_acc_<attribute>``: for datasets whose captions name attributes (the sample corpus), the
  share of clips whose generated caption states the true option (``AttributeScorer.read_attributes``);
* ``bleu`` (corpus BLEU-4) and ``chrf`` from ``sacrebleu``, the maintained reference
  implementation of both, on the generated against the reference captions;
* ``exact_match``: generated == reference, ignoring case, surrounding space and a final full
  stop; and ``short_exact_match`` (with its count ``short_answers``), the same over the references
  of at most ``SHORT_ANSWER_WORDS`` words, where exact match is the standard answer metric
  (question answering: "yes", "three", "to the left").

Every clip's prediction goes to ``predictions.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from kvideo.data.scoring import attribute_scorers
from kvideo.files import open_new
from kvideo.train.caption_metrics import caption_metrics
from kvideo.train.distributed import DistEnv
from kvideo.train.evaluate import CaptionEncoder, ScoredSplit, evaluate
from kvideo.train.restore import TrainedModel, autocast_for


def generated_attribute_accuracy(dataset_type: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """``gen_acc_<attribute>`` over the clips whose reference states that attribute."""
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for scorer in attribute_scorers(dataset_type):
        read = getattr(scorer, "read_attributes", None)
        if read is None:
            continue
        for row in rows:
            truth: Mapping[str, str] | None = read(row["reference"])
            if not truth:
                continue
            said = read(row["generated"]) or {}
            for attr, value in truth.items():
                total[attr] = total.get(attr, 0) + 1
                right[attr] = right.get(attr, 0) + int(said.get(attr) == value)
    return {f"gen_acc_{attr}": right[attr] / total[attr] for attr in total}


def evaluate_trained(
    trained: TrainedModel,
    *,
    split: str = "validation",
    max_new_tokens: int = 32,
    batch_size: int = 0,
    predictions: Path | None = None,
) -> dict[str, Any]:
    """Loss, attribute accuracies, generated captions and their metrics on ``split`` (one process)."""
    from kvideo.data.loader import build_dataset, build_loader
    from kvideo.data.settings import ClipSettings

    cfg = trained.cfg
    dataset = build_dataset(ClipSettings.of(cfg), split=split, tokenizer=trained.tokenizer)
    env = DistEnv(rank=0, local_rank=0, world_size=1, device=trained.device, is_main=True)
    autocast = autocast_for(trained)
    rows: list[dict[str, Any]] = []

    def captioned(batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Each batch, after captioning its clips (one decode serves both measurements)."""
        for batch in batches:
            captions = trained.spec.generate(
                trained.model,
                batch,
                trained.tokenizer,
                prompt=cfg.video.prompt,
                max_new_tokens=max_new_tokens,
                autocast=autocast,
            )
            for i, generated in enumerate(captions):
                if batch["skip_reason"][i]:
                    continue
                valid = batch["frame_mask"][i]
                rows.append(
                    {
                        "video": batch["path"][i],
                        "reference": batch["caption"][i],
                        "generated": generated,
                        "frames": int(valid.sum()),
                        "times": [round(float(t), 3) for t in batch["frame_times"][i][valid.cpu()]],
                    }
                )
            yield batch

    batches = build_loader(
        dataset,
        shuffle=False,
        batch_size=batch_size or cfg.trainer.batch_size,
        drop_last=False,
        device=trained.device,
    )
    with torch.no_grad():
        result = evaluate(
            trained.model,
            captioned(batches),
            encoder=CaptionEncoder(trained.tokenizer, cfg.video.prompt, cfg.model.max_text_len),
            split=ScoredSplit.of(dataset),
            env=env,
            autocast=autocast,
        )
    result.update(generated_attribute_accuracy(cfg.video.dataset_type, rows))
    result.update(caption_metrics([r["reference"] for r in rows], [r["generated"] for r in rows]))
    result.update({"split": split, "step": trained.step, "checkpoint": str(trained.checkpoint)})
    if predictions is not None:
        with open_new(predictions) as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return result
