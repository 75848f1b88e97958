"""Model contract tests: shapes, what the loss counts, what attention may see, and trainability.

A tiny config keeps the whole file at a few seconds on 2 CPU cores; the properties tested
(masking, causality, loss bookkeeping) do not depend on size.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, cast

import pytest
import torch

from kvideo.config.model import ModelConfig
from kvideo.model import (
    IGNORE_INDEX,
    build_attention_mask,
    build_model,
    count_parameters,
    parameter_summary,
)
from kvideo.model.vlm import VideoLanguageModel
from tests.helpers.configs import tiny_model

VOCAB = 50
MAX_FRAMES = 4
FRAME_SIZE = 32
TEXT_LEN = 12
BATCH = 3

TINY = tiny_model(patch_size=8, lm_depth=2, max_text_len=TEXT_LEN)


@pytest.fixture
def model() -> VideoLanguageModel:
    torch.manual_seed(0)
    return cast(
        VideoLanguageModel,
        build_model(TINY, vocab_size=VOCAB, max_frames=MAX_FRAMES, frame_size=FRAME_SIZE).eval(),
    )


VARIANTS = {
    "linear": TINY,
    "motion_tokens": dataclasses.replace(TINY, motion_tokens=True),
    "conv_stem": dataclasses.replace(TINY, patch_stem="conv"),
}


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> VideoLanguageModel:
    """The architecture options whose masking and ordering guarantees must hold too."""
    torch.manual_seed(0)
    cfg = VARIANTS[request.param]
    return cast(
        VideoLanguageModel,
        build_model(cfg, vocab_size=VOCAB, max_frames=MAX_FRAMES, frame_size=FRAME_SIZE).eval(),
    )


def make_batch(seed: int = 0, batch: int = BATCH) -> dict[str, torch.Tensor]:
    """Prompt tokens (label -100) then caption tokens, the last sample with two padded frames."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(batch, MAX_FRAMES, 3, FRAME_SIZE, FRAME_SIZE, generator=g)
    frame_mask = torch.ones(batch, MAX_FRAMES, dtype=torch.bool)
    frame_mask[-1, 2:] = False
    input_ids = torch.randint(0, VOCAB, (batch, TEXT_LEN), generator=g)
    labels = input_ids.clone()
    labels[:, :3] = IGNORE_INDEX  # prompt
    labels[0, 9:] = IGNORE_INDEX  # right padding of a shorter caption
    return {"frames": frames, "frame_mask": frame_mask, "input_ids": input_ids, "labels": labels}


def test_output_shapes_and_dtypes(model: VideoLanguageModel) -> None:
    out = model(**make_batch())
    assert out["logits"].shape == (BATCH, TEXT_LEN, VOCAB)
    assert out["loss"].shape == ()
    assert out["nll"].shape == (BATCH,)
    assert out["ntokens"].shape == (BATCH,)
    assert not out["ntokens"].is_floating_point()
    assert torch.isfinite(out["loss"])


def test_logits_only_without_labels(model: VideoLanguageModel) -> None:
    batch = make_batch()
    batch.pop("labels")
    out = model(**batch)
    assert set(out) == {"logits", "tokens", "computed_tokens", "visual_tokens", "visual_keys"}


def test_loss_is_mean_nll_over_caption_tokens_only(model: VideoLanguageModel) -> None:
    batch = make_batch()
    out = model(**batch)
    logits, labels = out["logits"], batch["labels"]
    # Shifted: logits at text position i predict labels[:, i + 1].
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected = -(picked[keep]).mean()
    torch.testing.assert_close(out["loss"], expected)
    assert out["ntokens"].tolist() == keep.sum(1).tolist()
    torch.testing.assert_close(out["loss"], out["nll"].sum() / out["ntokens"].sum())


def test_all_labels_ignored_gives_zero_loss_without_nan(model: VideoLanguageModel) -> None:
    batch = make_batch()
    batch["labels"].fill_(IGNORE_INDEX)
    model.train()
    out = model(**batch)
    assert out["loss"].item() == 0.0
    assert out["ntokens"].sum().item() == 0
    out["loss"].backward()  # the graph stays attached (DDP needs every parameter used)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and not g.any() for g in grads)


def test_sample_without_caption_tokens_has_zero_weight(model: VideoLanguageModel) -> None:
    batch = make_batch()
    alone = {k: v[:1] for k, v in batch.items()}
    batch["labels"][1:] = IGNORE_INDEX
    torch.testing.assert_close(model(**batch)["loss"], model(**alone)["loss"])


def test_per_sample_nll_does_not_depend_on_the_rest_of_the_batch(model: VideoLanguageModel) -> None:
    batch = make_batch()
    out = model(**batch)
    for i in range(BATCH):
        single = model(**{k: v[i : i + 1] for k, v in batch.items()})
        torch.testing.assert_close(single["nll"][0], out["nll"][i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("valid", [[True, True, False, False], [True, False, True, True]])
def test_padded_frames_are_invisible(variant: VideoLanguageModel, valid: list[bool]) -> None:
    model = variant
    batch = make_batch()
    batch["frame_mask"][:] = torch.tensor(valid)
    ref = model(**batch)
    padded = valid.index(False)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["frames"][:, padded] = torch.randn_like(changed["frames"][:, padded]) * 10
    out = model(**changed)
    torch.testing.assert_close(out["logits"], ref["logits"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["nll"], ref["nll"], rtol=0, atol=1e-5)

    changed = {k: v.clone() for k, v in batch.items()}
    changed["frames"][:, valid.index(True)] += 1.0
    assert not torch.allclose(model(**changed)["logits"], ref["logits"], atol=1e-4)


def test_temporal_order_is_visible(variant: VideoLanguageModel) -> None:
    model = variant
    batch = make_batch()
    batch["frame_mask"][:] = True
    ref = model(**batch)["logits"]
    batch["frames"] = batch["frames"].flip(1)
    assert not torch.allclose(model(**batch)["logits"], ref, atol=1e-4)


def test_text_is_causal(model: VideoLanguageModel) -> None:
    batch = make_batch()
    ref = model(**batch)["logits"]
    k = 7
    batch["input_ids"][:, k] = (batch["input_ids"][:, k] + 1) % VOCAB
    out = model(**batch)["logits"]
    torch.testing.assert_close(out[:, :k], ref[:, :k], rtol=0, atol=1e-6)
    assert not torch.allclose(out[:, k:], ref[:, k:], atol=1e-4)


def test_fully_masked_sample_is_finite(variant: VideoLanguageModel) -> None:
    model = variant
    batch = make_batch()
    batch["frame_mask"][1] = False  # a video that failed to decode
    model.train()
    out = model(**batch)
    assert torch.isfinite(out["logits"]).all()
    assert torch.isfinite(out["nll"]).all()
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_attention_mask_layout() -> None:
    frame_mask = torch.tensor([[True, False], [False, False]])
    mask = build_attention_mask(frame_mask, tokens_per_frame=2, text_len=2)
    assert mask.shape == (2, 1, 6, 6) and mask.dtype == torch.bool
    m0 = mask[0, 0]
    assert not m0.triu(1).any()  # causal
    assert not m0[4:, 2:4].any()  # text never sees the padded frame's tokens
    assert m0[4:, :2].all()  # ...but does see the valid frame's
    assert m0.diagonal().all()  # no empty row, even for padded tokens
    m1 = mask[1, 0]
    assert not m1[:, :4].fill_diagonal_(False).any()  # all frames padded: only the diagonal


def test_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = build_model(TINY, vocab_size=VOCAB, max_frames=MAX_FRAMES, frame_size=FRAME_SIZE)
    batch = make_batch(seed=1, batch=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = last = None
    for _ in range(40):
        loss = model(**batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert first is not None and last is not None
    assert last < 0.3 * first, (first, last)


def test_cpu_bf16_autocast(model: VideoLanguageModel) -> None:
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**make_batch(batch=2))
    assert out["logits"].dtype == torch.bfloat16
    assert out["loss"].dtype == torch.float32
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_sequence_over_budget_is_rejected(model: VideoLanguageModel) -> None:
    batch = make_batch()
    long_ids = torch.zeros(BATCH, TINY.max_seq_len, dtype=torch.long)
    with pytest.raises(ValueError, match=r"max_seq_len"):
        model(batch["frames"], batch["frame_mask"], long_ids)


def test_default_config_is_about_one_million_parameters() -> None:
    model: Any = build_model(ModelConfig(), vocab_size=259, max_frames=8, frame_size=64)
    assert 0.8e6 < count_parameters(model) < 1.2e6
    assert parameter_summary(model).endswith(f"total {count_parameters(model):,}")
    # The tied head is counted once.
    assert model.lm.head.weight is model.lm.tok_embed.weight


def test_timm_backbone_without_timm_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import fails even if timm is installed
    cfg = ModelConfig(vision_backbone="timm", timm_model="vit_tiny_patch16_224", timm_weights="/no/such.pth")
    with pytest.raises(ImportError, match=r"model\.vision_backbone=timm.*pip install timm"):
        build_model(cfg, vocab_size=VOCAB, max_frames=MAX_FRAMES, frame_size=224)
