"""``kvideo.train.evaluate.evaluate``: the validation loss and the forced-choice attribute accuracy,
on a fake model that reads captions back."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from kvideo.data.datasets.sample.evaluation import candidate_set
from kvideo.train.distributed import DistEnv
from kvideo.train.evaluate import CaptionEncoder, ScoredSplit, evaluate


class _CaptionReader(nn.Module):
    """Fake model: reads the caption back from the byte ids and scores it against the clip's
    'truth' stored in frames[:, 0, 0, 0, 0] (an index into ``truths``). It sees colour and
    direction, and always believes the shape is a triangle."""

    def __init__(self, truths: list[dict[str, str]]) -> None:
        super().__init__()
        self.truths = truths
        self.rows_per_call: list[int] = []

    def forward(self, frames, frame_mask, input_ids, labels, frame_times=None, visual_at=None, text_len=None):
        from kvideo.data.datasets.sample.captions import parse_caption

        assert frame_times is not None and frame_times.shape == frame_mask.shape  # the batch's own

        self.rows_per_call.append(len(input_ids))
        nll = []
        for i in range(len(input_ids)):
            text = bytes(int(t) for t in input_ids[i] if t < 256).decode()
            said = parse_caption(text)
            assert said is not None, text
            truth = dict(self.truths[int(frames[i, 0, 0, 0, 0])], shape="triangle")
            nll.append(float(sum(said[k] != truth[k] for k in truth)))
        nll_t = torch.tensor(nll)
        ntok = (labels != -100).sum(1)
        return {"loss": nll_t.sum() / ntok.sum(), "nll": nll_t, "ntokens": ntok, "logits": None}


def test_evaluate_accuracy_batches_candidates_and_excludes_bad_and_padding() -> None:
    from kvideo.data.datasets.sample.captions import caption_for
    from kvideo.data.tokenizer import ByteTokenizer

    truths = [
        {"color": "red", "shape": "circle", "direction": "left"},
        {"color": "blue", "shape": "triangle", "direction": "up"},
        {"color": "green", "shape": "square", "direction": "down"},
    ]
    tok = ByteTokenizer()

    def batch(idx: list[int], reasons: list[str]) -> dict[str, Any]:
        frames = torch.zeros(len(idx), 1, 3, 2, 2)
        frames[:, 0, 0, 0, 0] = torch.tensor(idx, dtype=torch.float)
        captions = [caption_for(**truths[i]) for i in idx]
        enc = [tok.encode_example("", c, 40) for c in captions]
        return {
            "frames": frames,
            "frame_mask": torch.ones(len(idx), 1, dtype=torch.bool),
            "frame_times": torch.zeros(len(idx), 1),
            "input_ids": torch.tensor([e[0] for e in enc]),
            "labels": torch.tensor([e[1] for e in enc]),
            "skip_reason": reasons,
            "caption": captions,
            "path": [f"/{i}" for i in idx],
        }

    # 3 real samples on one rank, batch of 2, then a padded batch (position 3 >= num_samples)
    # and one bad sample that must count nowhere.
    batches = [batch([0, 1], ["", ""]), batch([2, 0], ["decode_error", ""])]
    model = _CaptionReader(truths)
    env = DistEnv(0, 0, 1, torch.device("cpu"), True)

    def evaluated(dataset_type: str) -> dict[str, Any]:
        encoder = CaptionEncoder(tok, "", 40)
        return evaluate(
            model, batches, encoder=encoder, env=env, max_rows=7, split=ScoredSplit(3, (dataset_type,))
        )

    result = evaluated("sample")
    # Samples 0 and 1 only (2 is bad; the second "0" is padding).
    assert result["val_clips"] == 2 and result["val_skipped"] == 1
    assert result["acc_color"] == 1.0 and result["acc_direction"] == 1.0
    assert result["acc_shape"] == 0.5  # right only for the clip that really is a triangle
    assert result["chance_color"] == 0.25 and result["chance_shape"] == pytest.approx(1 / 3)
    cands = candidate_set(caption_for(**truths[0]))
    assert cands is not None
    n_cands = len(cands.captions)
    assert n_cands == 1 + 3 + 2 + 3  # the true caption is shared by the three questions
    # The first batch: one loss forward (2 rows), then its 2 x 9 candidates in chunks of at
    # most max_rows. The second batch has nothing valid, so no forward at all.
    assert model.rows_per_call == [2, 7, 7, 2 * n_cands - 14]
    assert model.training  # restored
    # A dataset without attribute questions (free-form captions) gets the loss alone.
    model.rows_per_call.clear()
    plain = evaluated("manifest")
    assert plain["val_loss"] == result["val_loss"] and plain["val_clips"] == 2
    assert not [k for k in plain if k.startswith(("acc_", "chance_"))]
    assert model.rows_per_call == [2]  # no candidate ranking
