"""Conversations: turns -> ids with the loss on the answers only, the visual tokens spliced where
``<video>`` is, and models of both families that read the spliced sequence exactly as they read
``[visual | text]`` (padded frames invisible, generation continuing what the loss trains)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.data.conversation import IGNORE_INDEX, check_turns
from kvideo.data.rows import ClipRow, Turn
from kvideo.data.tokenizer import ByteTokenizer, ChatTokenizer, encode_row
from kvideo.model import build_model
from kvideo.model.hf_vlm import HFVideoLanguageModel
from kvideo.model.sequence import splice, text_positions
from kvideo.model.vlm import VideoLanguageModel
from tests.helpers.configs import tiny_hf_model, tiny_model

QA = (
    Turn("user", "<video>\nWhat moves?"),
    Turn("assistant", "A red circle."),
    Turn("user", "Which way?"),
    Turn("assistant", "left"),
)


def targets(labels: list[int]) -> list[int]:
    return [t for t in labels if t != IGNORE_INDEX]


# ---- turns ------------------------------------------------------------------------------------


def test_a_conversation_without_placeholder_gets_it_at_the_start_of_its_first_user_turn() -> None:
    turns = check_turns([Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", "Yes")])
    assert turns[1] == Turn("user", "<video>\nHi")
    assert check_turns(QA) == QA


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([Turn("user", "<video> hi")], "no assistant turn"),
        ([Turn("user", "<video><video>"), Turn("assistant", "a")], "2 <video> placeholders"),
        ([Turn("user", "q"), Turn("assistant", "<video>")], "turn 1 (assistant) holds <video>"),
        (
            [Turn("user", "q"), Turn("assistant", "a"), Turn("user", "<video>"), Turn("assistant", "b")],
            "after",
        ),
        ([Turn("assistant", "a"), Turn("user", "q")], "no user turn before the first assistant turn"),
        ([Turn("user", " "), Turn("assistant", "a")], "turn 0 (user) is empty"),
        ([Turn("bot", "x"), Turn("assistant", "a")], "role 'bot'"),
    ],
)
def test_turns_that_cannot_train_are_refused_saying_why(turns: list[Turn], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_turns(turns)


# ---- encoding ---------------------------------------------------------------------------------


def test_plain_template_learns_every_answer_and_nothing_else() -> None:
    tok = ByteTokenizer()
    enc = encode_row(tok, ClipRow("v.mp4", "left", turns=QA), "ignored prompt", 96)
    assert len(enc.input_ids) == len(enc.labels) == 96
    assert tok.decode(enc.input_ids[: enc.visual_at]) == "User: "
    assert enc.input_ids[0] == tok.bos_id
    assert targets(enc.labels) == [*tok.encode("A red circle."), tok.eos_id, *tok.encode("left"), tok.eos_id]
    assert tok.decode(enc.input_ids[: enc.answer_at]).endswith("Which way?\nAssistant: ")
    assert tok.decode(enc.input_ids[enc.answer_at :]).startswith("left")
    assert "<video>" not in tok.decode(enc.input_ids)


def test_a_caption_row_keeps_its_layout_visual_first_context_then_caption() -> None:
    tok = ByteTokenizer()
    enc = encode_row(tok, ClipRow("v.mp4", "a cat"), "Q:", 16)
    assert (enc.input_ids, enc.labels) == tuple(tok.encode_example("Q:", "a cat", 16))
    assert (enc.visual_at, enc.answer_at) == (0, 3)


def test_a_cut_conversation_clamps_its_offsets_and_never_scores_the_token_after_the_video() -> None:
    tok = ByteTokenizer()
    enc = encode_row(
        tok, ClipRow("v.mp4", "x", turns=(Turn("user", "<video>"), Turn("assistant", "ab"))), "", 8
    )
    assert enc.visual_at == 7 and enc.answer_at == 8  # "[BOS]User: " fills 7, the cut ends at 8
    assert targets(enc.labels) == []  # the "\n" after the video is context anyway
    short = encode_row(tok, ClipRow("v.mp4", "x", turns=QA), "", 4)
    assert short.visual_at == 4 and short.answer_at == 4


def test_chat_template_targets_are_each_assistant_turn_and_its_end_of_turn(
    tiny_hf_parts: tuple[Path, Path],
) -> None:
    tok = ChatTokenizer(str(tiny_hf_parts[1]))
    enc = encode_row(tok, ClipRow("v.mp4", "left", turns=QA), "", 96)
    end = tok.encode("<|im_end|>\n")
    assert targets(enc.labels) == [*tok.encode("A red circle."), *end, *tok.encode("left"), *end]
    assert tok._tok.decode(enc.input_ids[: enc.visual_at]) == "<|im_start|>user\n"
    rendered = tok._tok.decode(enc.input_ids[: enc.answer_at])
    assert rendered.endswith("<|im_start|>user\nWhich way?<|im_end|>\n<|im_start|>assistant\n")
    assert "<video>" not in tok._tok.decode(enc.input_ids)


# ---- splicing ---------------------------------------------------------------------------------


def test_splice_puts_each_samples_visual_tokens_after_its_first_visual_at_text_tokens() -> None:
    text = torch.tensor([[1, 2, 3], [4, 5, 6]])[..., None]
    visual = torch.tensor([[7, 8], [9, 10]])[..., None]
    spliced = splice(text, visual, torch.tensor([0, 2]))[..., 0]
    assert spliced.tolist() == [[7, 8, 1, 2, 3], [4, 5, 9, 10, 6]]
    assert torch.equal(splice(text, visual, None), splice(text, visual, torch.tensor([0, 0])))
    where = text_positions(torch.tensor([0, 2]), 3, 2, 2, torch.device("cpu"))
    assert torch.equal(spliced.gather(1, where), text[..., 0])


TINY = tiny_model(patch_size=8, lm_depth=2, max_text_len=20)


def clips(batch: int, frames: int, size: int, valid: list[int]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[i < n for i in range(frames)] for n in valid])
    return {
        "frames": torch.randn(batch, frames, 3, size, size, generator=g),
        "frame_mask": mask,
        "frame_times": torch.where(mask, torch.arange(frames) * 0.5, torch.tensor(-1.0)),
    }


def test_builtin_model_reads_a_front_splice_exactly_as_visual_first() -> None:
    torch.manual_seed(0)
    model: Any = build_model(TINY, vocab_size=40, max_frames=3, frame_size=16).eval()
    assert isinstance(model, VideoLanguageModel)
    data = clips(2, 3, 16, [3, 2])
    ids = torch.randint(0, 40, (2, 12))
    plain = model(data["frames"], data["frame_mask"], ids)["logits"]
    spliced = model(data["frames"], data["frame_mask"], ids, visual_at=torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(spliced["logits"], plain)


@pytest.mark.parametrize("family", ["builtin", "hf"])
def test_padded_frames_are_invisible_and_each_sample_is_its_own_in_a_mixed_splice(
    family: str, tiny_hf_parts: tuple[Path, Path]
) -> None:
    model, vocab, size = _model(family, tiny_hf_parts)
    data = clips(2, 3, size, [2, 3])
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    visual_at = torch.tensor([3, 5])
    labels[0, :4] = labels[1, :6] = IGNORE_INDEX
    times = data["frame_times"]
    out = model(data["frames"], data["frame_mask"], ids, labels, frame_times=times, visual_at=visual_at)
    changed = data["frames"].clone()
    changed[0, 2] = 5.0  # sample 0's padded frame
    again = model(changed, data["frame_mask"], ids, labels, frame_times=times, visual_at=visual_at)
    torch.testing.assert_close(again["logits"], out["logits"])
    alone = model(
        data["frames"][1:],
        data["frame_mask"][1:],
        ids[1:],
        labels[1:],
        frame_times=times[1:],
        visual_at=visual_at[1:],
    )
    torch.testing.assert_close(alone["logits"][0], out["logits"][1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(alone["nll"][0], out["nll"][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["builtin", "hf"])
def test_generation_after_a_spliced_context_is_the_argmax_of_the_training_forward(
    family: str, tiny_hf_parts: tuple[Path, Path]
) -> None:
    model, vocab, size = _model(family, tiny_hf_parts)
    data = clips(1, 3, size, [2])
    context = torch.randint(0, vocab, (1, 5), generator=torch.Generator().manual_seed(3))
    visual_at = torch.tensor([2])
    generated = model.generate(
        data["frames"],
        data["frame_mask"],
        context,
        frame_times=data["frame_times"],
        visual_at=visual_at,
        max_new_tokens=4,
        stop_ids=[-1],
    )[0]
    ids = context
    for _ in range(4):
        logits = model(
            data["frames"], data["frame_mask"], ids, frame_times=data["frame_times"], visual_at=visual_at
        )["logits"]
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert generated == ids[0, context.shape[1] :].tolist()


def _model(family: str, parts: tuple[Path, Path]) -> tuple[Any, int, int]:
    torch.manual_seed(0)
    if family == "builtin":
        return build_model(TINY, vocab_size=40, max_frames=3, frame_size=16).eval(), 40, 16
    cfg = tiny_hf_model(*parts, max_text_len=12)
    model: Any = build_model(
        cfg, vocab_size=ChatTokenizer(str(parts[1])).vocab_size, max_frames=3, frame_size=64
    )
    assert isinstance(model, HFVideoLanguageModel)
    return model.eval(), 300, 64
