"""``kvideo.train.schedule`` (warmup, then cosine to a floor) and ``kvideo.train.optim.param_groups``
(what decays): the optimizer's two rules."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from kvideo.train.optim import param_groups
from kvideo.train.schedule import build_scheduler, lr_factor


def test_lr_schedule_warmup_then_cosine_to_floor() -> None:
    f = [lr_factor(s, warmup_steps=4, max_steps=20, min_lr_ratio=0.1) for s in range(25)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[4:]))
    assert f[19] == pytest.approx(0.1) and f[24] == pytest.approx(0.1)
    assert lr_factor(0, warmup_steps=0, max_steps=10, min_lr_ratio=0.0) == 1.0

    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = build_scheduler(opt, warmup_steps=4, max_steps=20, min_lr_ratio=0.1)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(f[:20])


def test_param_groups_skip_norms_biases_and_embeddings() -> None:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.pos = nn.Parameter(torch.zeros(6, 4))
            self.proj = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight  # tied: must appear once

    toy = Toy()
    decay, no_decay = param_groups(toy, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(toy.proj.weight)}
    expected = {toy.embed.weight, toy.pos, toy.proj.bias, toy.norm.weight, toy.norm.bias}
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in expected}
