"""A conversation about a video -> ``input_ids``, ``labels`` and where the visual tokens go.

Video instruction-tuning data (LLaVA-Video-178K, ShareGPT4Video, VideoChat) is a list of turns
whose first user turn holds a ``<video>`` placeholder: the clip's visual tokens are spliced in
there, and the loss is on the assistant turns only. Rules, checked by ``check_turns``:

* one ``<video>`` placeholder per visual of the record (``check_turns``'s ``visuals``), each in a
  user turn: the first before the first assistant turn (the first answer is about something
  seen), the others before the last one (a later question may bring another clip or picture).
  A one-visual conversation without a placeholder gets it at the start of its first user turn
  (``"<video>\\n"`` prepended, LLaVA's convention), so a plain question-answer record works as
  is;
* at least one assistant turn, and no empty turn.

How turns become text is the tokenizer's (``Tokenizer.conversation_pieces``): a Hugging Face LM's
own chat template when it has one, otherwise ``PLAIN_TEMPLATE``. Each piece is tokenized on its
own (as LLaVA's ``tokenizer_image_token`` does around ``<image>``), so the placeholder never
merges with its neighbours into one token.

``Encoded`` (what a sample carries; the conventions are ``kvideo.data.tokenizer``'s):

* ``input_ids`` / ``labels``: exactly ``max_len`` long, right-padded, labels aligned and
  ``-100`` outside the assistant turns (each assistant turn's target ends with the template's
  end-of-turn, or EOS: what the LM must learn to emit to stop).
* ``visual_at``: how many text tokens precede the visual tokens (0 = the visual tokens come
  first, the caption datasets' layout); ``later_at``: the same for the record's further visuals,
  in placeholder order (empty for one visual). The token right after each visual's tokens is
  never a target: the model scores text token ``i`` from text position ``i - 1``, which for that
  token lies before the visual (``kvideo.model.vlm`` explains why the last visual position
  predicts nothing).
* ``answer_at``: where the last assistant turn's target starts: ``input_ids[:answer_at]`` is the
  context an answer is generated after, and the last answer is the reference it is compared with.
* ``text_len``: the tokens before the padding (what ``data.packing`` keeps, and what the runs
  count as real text tokens: the pad id may be a real token too, EOS for tokenizers without one).
* Too long: cut at ``max_len`` from the end, as captions are; ``visual_at``, ``later_at`` and
  ``answer_at`` are clamped to the cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from kvideo.data.rows import TURN_ROLES, Turn

VIDEO_PLACEHOLDER = "<video>"
# A picture's placeholder in LLaVA's records; the conversations reader turns it into the visual one.
IMAGE_PLACEHOLDER = "<image>"
IGNORE_INDEX = -100

PLAIN_TEMPLATE = """\
[BOS if the tokenizer has one] then, per turn:
  system:    {text}\\n
  user:      User: {text}\\n            (the <video> placeholder inside {text})
  assistant: Assistant: {text}[EOS]\\n  (the loss is on {text}[EOS])"""


class Encoded(NamedTuple):
    """A tokenized example; see the module docstring for each field."""

    input_ids: list[int]
    labels: list[int]
    visual_at: int
    answer_at: int
    text_len: int
    later_at: tuple[int, ...] = ()

    @property
    def every_visual_at(self) -> tuple[int, ...]:
        """Each visual's place, in placeholder order."""
        return (self.visual_at, *self.later_at)


@dataclass(frozen=True)
class Piece:
    """A run of token ids in a rendered conversation: ``target`` ids are learned, ``video`` marks
    the place of the visual tokens (and has no ids)."""

    ids: tuple[int, ...] = ()
    target: bool = False
    video: bool = False


VIDEO = Piece(video=True)


def check_turns(turns: Sequence[Turn], visuals: int = 1) -> tuple[Turn, ...]:
    """``turns`` with the placeholders where they belong for a record of ``visuals`` clips or
    pictures (see the module docstring), or a ``ValueError`` saying what is wrong (the caller
    adds the file and record)."""
    if not turns:
        raise ValueError("no turns")
    for i, turn in enumerate(turns):
        if turn.role not in TURN_ROLES:
            raise ValueError(f"turn {i}: role {turn.role!r} is not one of {TURN_ROLES}")
        if not turn.text.strip():
            raise ValueError(f"turn {i} ({turn.role}) is empty")
        if VIDEO_PLACEHOLDER in turn.text and turn.role != "user":
            raise ValueError(f"turn {i} ({turn.role}) holds {VIDEO_PLACEHOLDER}; only a user turn may")
    answers = [i for i, turn in enumerate(turns) if turn.role == "assistant"]
    if not answers:
        raise ValueError("no assistant turn (nothing to learn)")
    held = [i for i, turn in enumerate(turns) for _ in range(turn.text.count(VIDEO_PLACEHOLDER))]
    if not held and visuals == 1:
        first_user = next((i for i, turn in enumerate(turns) if turn.role == "user"), len(turns))
        if first_user > answers[0]:
            raise ValueError(f"no user turn before the first assistant turn to hold {VIDEO_PLACEHOLDER}")
        placed = Turn("user", f"{VIDEO_PLACEHOLDER}\n{turns[first_user].text}")
        return (*turns[:first_user], placed, *turns[first_user + 1 :])
    if len(held) != visuals:
        raise ValueError(
            f"{len(held)} {VIDEO_PLACEHOLDER} placeholders for {visuals} visual(s); each placeholder "
            "takes the record's next video or picture, so their numbers must match"
        )
    if held[0] > answers[0]:
        raise ValueError(
            f"{VIDEO_PLACEHOLDER} is in turn {held[0]}, after the first assistant turn ({answers[0]}); "
            "the first must come before every answer"
        )
    if held[-1] > answers[-1]:
        raise ValueError(
            f"{VIDEO_PLACEHOLDER} is in turn {held[-1]}, after the last assistant turn ({answers[-1]}); "
            "no answer would see it"
        )
    return tuple(turns)


def split_placeholder(text: str, placeholder: str = VIDEO_PLACEHOLDER) -> list[str | None]:
    """``text`` as its parts around ``placeholder``, ``None`` standing for it."""
    parts: list[str | None] = []
    for i, part in enumerate(text.split(placeholder)):
        if i:
            parts.append(None)
        if part:
            parts.append(part)
    return parts


def assemble(pieces: Sequence[Piece], max_len: int, pad_id: int) -> Encoded:
    """``Encoded`` of rendered pieces (see the module docstring)."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 (got {max_len})")
    ids: list[int] = []
    labels: list[int] = []
    places: list[int] = []
    answer_at = -1
    for piece in pieces:
        if piece.video:
            places.append(len(ids))
            continue
        if piece.target:
            answer_at = len(ids)
        ids.extend(piece.ids)
        labels.extend(piece.ids if piece.target else [IGNORE_INDEX] * len(piece.ids))
    if not places or answer_at < 0:
        raise ValueError("a conversation needs a video piece and a target piece")
    ids, labels = ids[:max_len], labels[:max_len]
    places, answer_at = [min(at, len(ids)) for at in places], min(answer_at, len(ids))
    for at in places:
        if at < len(labels):
            labels[at] = IGNORE_INDEX  # scored from before the visual: never a target
    pad = max_len - len(ids)
    return Encoded(
        ids + [pad_id] * pad,
        labels + [IGNORE_INDEX] * pad,
        places[0],
        answer_at,
        len(ids),
        tuple(places[1:]),
    )
