"""Tokenizers: a download-free byte tokenizer (default) and a local ``tokenizer.json`` wrapper.

Both expose one small interface (``Tokenizer``) so the per-sample code never branches
on which one it has. Torch-free: tokenization happens once per row in the dataset and
produces plain lists.

``encode_example`` conventions (Hugging Face's, so a HF causal LM could consume them):

* ``input_ids = [BOS] + prompt + caption + [EOS]``, right-padded with ``PAD`` to exactly
  ``max_len``.
* ``labels`` are *aligned* with ``input_ids`` (``labels[i]`` is the token at position
  ``i``), ``-100`` everywhere except caption tokens and the final ``EOS``; the model does
  the shift (logits at ``i - 1`` predict ``labels[i]``). The prompt is context only.
* Too long: the sequence is cut at ``max_len`` from the end, and the ``EOS`` goes with
  it. Keeping EOS after a cut caption would teach the model to stop mid-sentence; a
  prompt so long that no caption token fits leaves every label at ``-100`` (no loss).
* ``pad_id`` differs from ``bos_id``/``eos_id`` and from every token ``encode`` returns
  for ordinary text, so ``input_ids != pad_id`` is the attention mask.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kvideo.data.conversation import (
    IGNORE_INDEX,
    VIDEO,
    VIDEO_PLACEHOLDER,
    Encoded,
    Piece,
    assemble,
    split_placeholder,
)
from kvideo.data.rows import ClipRow, Turn
from kvideo.time_limit import time_limit

if TYPE_CHECKING:
    from kvideo.config.data import DataConfig
    from kvideo.config.model import ModelConfig

__all__ = [
    "IGNORE_INDEX",
    "Encoded",
    "Tokenizer",
    "build_tokenizer",
    "caption_turns",
    "encode_caption",
    "encode_row",
]


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    eos_id: int
    name: str
    """How messages name it: ``byte-level``, or the file / folder it was loaded from."""
    captions_as_conversations: bool
    """A released VLM's tokenizer: a caption row is the one-turn conversation its chat template
    frames (``encode_row``), so its video sits where the model was trained to see it."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    @property
    def stop_ids(self) -> list[int]: ...

    def context_ids(self, prompt: str) -> list[int]: ...

    def target_ids(self, caption: str) -> list[int]: ...

    def encode_example(self, prompt: str, caption: str, max_len: int) -> tuple[list[int], list[int]]: ...

    def conversation_pieces(self, turns: Sequence[Turn]) -> list[Piece]: ...


def encode_row(tokenizer: Tokenizer, row: ClipRow, prompt: str, max_len: int) -> Encoded:
    """A row's text as the model reads it: its conversation (``kvideo.data.conversation``), or
    ``prompt`` then its caption, with the visual tokens first (``encode_example``); with
    ``captions_as_conversations``, ``caption_turns``."""
    if row.turns:
        return assemble(tokenizer.conversation_pieces(row.turns), max_len, tokenizer.pad_id)
    return encode_caption(tokenizer, prompt, row.caption, max_len)


def caption_turns(prompt: str, caption: str) -> tuple[Turn, Turn]:
    """A caption row as the one-turn conversation ``captions_as_conversations`` tokenizers read:
    ``<video>`` then the prompt (the order of Qwen's own processor), answered by the caption."""
    return Turn("user", VIDEO_PLACEHOLDER + prompt), Turn("assistant", caption)


def encode_caption(tokenizer: Tokenizer, prompt: str, caption: str, max_len: int) -> Encoded:
    """A caption row's text (``encode_row``): also how candidate captions are scored."""
    if tokenizer.captions_as_conversations:
        return assemble(
            tokenizer.conversation_pieces(caption_turns(prompt, caption)), max_len, tokenizer.pad_id
        )
    input_ids, labels = tokenizer.encode_example(prompt, caption, max_len)
    context = min(len(tokenizer.context_ids(prompt)), max_len)
    target = sum(1 for label in labels if label != IGNORE_INDEX)  # every target token is a label
    return Encoded(input_ids, labels, 0, context, context + target)


class _ExampleMixin:
    """``encode_example`` on top of ``context_ids`` / ``target_ids`` (shared by all tokenizers).

    The split is also what generation needs: a caption is generated after ``context_ids``.
    """

    pad_id: int
    bos_id: int
    eos_id: int
    captions_as_conversations = False

    def encode(self, text: str) -> list[int]:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @property
    def stop_ids(self) -> list[int]:
        """Generation ends at any of these (the first is EOS)."""
        return [self.eos_id]

    def context_ids(self, prompt: str) -> list[int]:
        """What precedes the caption: BOS, then the prompt."""
        return [self.bos_id, *(self.encode(prompt) if prompt else [])]

    def target_ids(self, caption: str) -> list[int]:
        """The tokens the loss is on: the caption, then EOS."""
        return [*self.encode(caption), self.eos_id]

    def encode_example(self, prompt: str, caption: str, max_len: int) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)``, both exactly ``max_len`` long (see the module docstring)."""
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 to hold BOS and EOS (got {max_len})")
        context = self.context_ids(prompt)
        target = self.target_ids(caption)
        input_ids = (context + target)[:max_len]
        labels = ([IGNORE_INDEX] * len(context) + target)[:max_len]
        pad = max_len - len(input_ids)
        return input_ids + [self.pad_id] * pad, labels + [IGNORE_INDEX] * pad

    def conversation_pieces(self, turns: Sequence[Turn]) -> list[Piece]:
        """``turns`` in ``kvideo.data.conversation.PLAIN_TEMPLATE``: for tokenizers without a
        chat template (the byte tokenizer, a bare ``tokenizer.json``)."""
        pieces = [Piece((self.bos_id,))] if self.bos_id >= 0 else []
        for turn in turns:
            if turn.role == "system":
                pieces.append(self._text(f"{turn.text}\n"))
            elif turn.role == "user":
                pieces.append(self._text("User: "))
                pieces.extend(
                    VIDEO if part is None else self._text(part) for part in split_placeholder(turn.text)
                )
                pieces.append(self._text("\n"))
            else:
                pieces.append(self._text("Assistant: "))
                pieces.append(Piece((*self.encode(turn.text), self.eos_id), target=True))
                pieces.append(self._text("\n"))
        return pieces

    def _text(self, text: str) -> Piece:
        return Piece(tuple(self.encode(text)))


class ByteTokenizer(_ExampleMixin):
    """UTF-8 bytes as ids 0..255 plus PAD=256, BOS=257, EOS=258: nothing to download.

    Captions are short, so the longer sequences cost little, and any text round-trips.
    """

    vocab_size = 259
    name = "byte-level"
    pad_id = 256
    bos_id = 257
    eos_id = 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Text of the byte ids; special ids are dropped and broken UTF-8 is replaced."""
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


# Common spellings of the special tokens in published tokenizer.json files.
_SPECIAL_NAMES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "bos": ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]", "<|im_start|>"),
    "eos": ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "[SEP]", "<|im_end|>"),
}


class HFTokenizer(_ExampleMixin):
    """A local ``tokenizer.json`` through the ``tokenizers`` library (no hub download).

    Special tokens are looked up by their usual names; any that the file lacks (or that
    would collide with another, e.g. a PAD that is also EOS) gets a fresh id after the
    file's vocabulary, so ``vocab_size`` may exceed the file's by up to three.
    """

    def __init__(self, path: str) -> None:
        file = os.path.expanduser(path)
        if os.path.isdir(file):
            file = os.path.join(file, "tokenizer.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"data.tokenizer={path!r}: no tokenizer.json there (expected a local Hugging Face "
                "tokenizers file; leave data.tokenizer empty for the built-in byte tokenizer)"
            )
        from tokenizers import Tokenizer as _Tokenizer  # a dependency; imported only when used

        self.path = self.name = file
        try:
            self._tok = _Tokenizer.from_file(file)
        except Exception as e:  # tokenizers raises a bare Exception("expected value at line 1 column 1")
            why = " ".join(str(e).split())[:200] or type(e).__name__
            raise ValueError(
                f"data.tokenizer={path!r}: {file} is not a Hugging Face tokenizers JSON file ({why}); "
                "expected a tokenizer.json as saved by tokenizers' Tokenizer.save or transformers' "
                "save_pretrained"
            ) from None
        self._base_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        next_id = self._base_vocab
        taken: set[int] = set()
        ids: dict[str, int] = {}
        for role in ("pad", "bos", "eos"):
            found = next(
                (
                    tid
                    for name in _SPECIAL_NAMES[role]
                    if (tid := self._tok.token_to_id(name)) is not None and tid not in taken
                ),
                None,
            )
            if found is None:
                found, next_id = next_id, next_id + 1
            ids[role] = found
            taken.add(found)
        self.pad_id, self.bos_id, self.eos_id = ids["pad"], ids["bos"], ids["eos"]
        self.vocab_size = next_id
        self._special = frozenset(taken)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        """Text of the ids; PAD/BOS/EOS and ids beyond the file's vocabulary are dropped."""
        keep = [i for i in ids if 0 <= i < self._base_vocab and i not in self._special]
        return self._tok.decode(keep, skip_special_tokens=True)


# The longest one rendering of a model folder's chat template may take.
TEMPLATE_SECONDS = 10.0


class ChatTokenizer(_ExampleMixin):
    """A Hugging Face LM's own tokenizer (``AutoTokenizer``, offline), captions framed by its chat
    template when it has one.

    With a template, the context is the user turn holding the prompt plus the assistant header
    (``add_generation_prompt``), and the target is the rest of the rendered conversation: the
    caption and the template's end-of-turn (``<|im_end|>\n`` for Qwen2), which is what the LM
    emits at inference. Without one: BOS (if the tokenizer has one) + prompt, caption + EOS.
    The visual tokens precede this text (``kvideo.model.hf_vlm``).
    """

    def __init__(
        self,
        folder: str,
        *,
        field: str = "model.lm_path",
        captions_as_conversations: bool = False,
        trust_remote_code: bool = False,
        video_item: str = "",
    ) -> None:
        """``video_item``: what the chat template renders a ``{"type": "video"}`` content item as
        (a released VLM's: ``hf_folders.VideoVlmGeometry.video_item``). Set, every turn is given
        to the template as a content list, as released VLM templates read them (LLaVA-OneVision's
        and SmolVLM2's render plain-string content as nothing), and the video goes where that
        item is rendered. Empty: turns are strings holding the ``<video>`` placeholder."""
        from transformers import AutoTokenizer

        self.name = folder
        self.field = field
        self.captions_as_conversations = captions_as_conversations
        self.video_item = video_item
        self._tok: Any = AutoTokenizer.from_pretrained(
            folder, local_files_only=True, trust_remote_code=trust_remote_code
        )
        eos = self._tok.eos_token_id
        if eos is None:
            raise ValueError(f"{field}: the tokenizer in {folder} has no eos_token")
        self.eos_id = int(eos)
        # No pad token (Llama, GPT-2): pad with EOS, as Hugging Face does. The causal mask hides
        # right padding from every real token, so only counting uses pad_id.
        pad = self._tok.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id
        bos = self._tok.bos_token_id
        self.bos_id = int(bos) if bos is not None else -1
        self.vocab_size = len(self._tok)
        self.has_chat_template = bool(getattr(self._tok, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True)).strip()

    def save(self, folder: Path) -> None:
        """``save_pretrained`` into ``folder`` (an export's LM folder)."""
        self._tok.save_pretrained(folder)

    @property
    def stop_ids(self) -> list[int]:
        """EOS, and the chat template's end-of-turn token (``<|im_end|>`` for Qwen2 base models,
        whose EOS is ``<|endoftext|>``): what a trained target ends with."""
        special = set(self._tok.all_special_ids)
        end_of_turn = [t for t in self.target_ids("") if t in special][:1]
        return [self.eos_id, *(t for t in end_of_turn if t != self.eos_id)]

    def _ended(self, target: list[int]) -> list[int]:
        """``target`` with EOS after it when the template ended the turn with no special token
        (LLaVA-NeXT-Video's ``ASSISTANT: ... `` turns): the model is trained to stop, as its
        own recipe trained it (``</s>`` after each answer)."""
        special = set(self._tok.all_special_ids)
        return target if any(t in special for t in target) else [*target, self.eos_id]

    def _message(self, role: str, text: str) -> dict[str, Any]:
        """One turn for the chat template: a string, or with ``video_item`` a content list (the
        ``<video>`` placeholders become video items)."""
        if not self.video_item:
            return {"role": role, "content": text}
        content = [
            {"type": "video"} if part is None else {"type": "text", "text": part}
            for part in split_placeholder(text)
        ]
        return {"role": role, "content": content or [{"type": "text", "text": ""}]}

    def _render(self, messages: list[dict[str, Any]], *, generation_prompt: bool) -> list[int]:
        with self._bounded():
            ids = self._tok.apply_chat_template(
                messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
            )
        return [int(i) for i in ids]

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """One rendering, bounded in time (the template is a program from the model folder,
        ``kvideo.time_limit``), its Jinja errors one line naming the folder: jinja2's own name
        neither the folder nor the file."""
        from jinja2 import TemplateError, TemplateSyntaxError

        with time_limit(
            TEMPLATE_SECONDS,
            f"{self.field}: the chat template of {self.name} ran for more than {TEMPLATE_SECONDS:g} s "
            "rendering one conversation (released templates take milliseconds); refused",
        ):
            try:
                yield
            except TemplateSyntaxError as e:
                raise ValueError(
                    f"{self.field}: the chat template of {self.name} is not valid Jinja "
                    f"(line {e.lineno}: {e.message})"
                ) from None
            except TemplateError as e:  # raise_exception(...) in the template, an undefined name
                raise ValueError(
                    f"{self.field}: the chat template of {self.name} refused the conversation: {e.message}"
                ) from None

    def context_ids(self, prompt: str) -> list[int]:
        if not self.has_chat_template:
            return [*([self.bos_id] if self.bos_id >= 0 else []), *self.encode(prompt)]
        return self._render([self._message("user", prompt)], generation_prompt=True)

    def target_ids(self, caption: str) -> list[int]:
        if self.has_chat_template:
            # The assistant turn is what the template adds after the context; templates that
            # render the last turn differently (no prefix match) fall back to caption + EOS.
            context = self._render([self._message("user", "\x00")], generation_prompt=True)
            full = self._render(
                [self._message("user", "\x00"), self._message("assistant", caption)],
                generation_prompt=False,
            )
            if full[: len(context)] == context and len(full) > len(context):
                return self._ended(full[len(context) :])
        return [*self.encode(caption), self.eos_id]

    def conversation_pieces(self, turns: Sequence[Turn]) -> list[Piece]:
        """``turns`` rendered by the chat template (the plain template without one).

        An assistant turn's target is what the template adds between the conversation before it
        with the generation prompt and the conversation through it: its text and end-of-turn.
        """
        if not self.has_chat_template:
            return super().conversation_pieces(turns)
        messages = [self._message(turn.role, turn.text) for turn in turns]
        full = self._render_text(messages, generation_prompt=False)
        if self.video_item and any(VIDEO_PLACEHOLDER in turn.text for turn in turns):
            if self.video_item not in full:
                raise ValueError(
                    f"{self.field}: the chat template of {self.name} does not render a video "
                    f"content item as {self.video_item!r}, where this model's video goes"
                )
        pieces: list[Piece] = []
        done = 0
        for i, turn in enumerate(turns):
            if turn.role != "assistant":
                continue
            before = self._render_text(messages[:i], generation_prompt=True)
            through = self._render_text(messages[: i + 1], generation_prompt=False)
            if not (full.startswith(through) and through.startswith(before) and len(before) >= done):
                raise ValueError(
                    f"{self.field}: the chat template of {self.name} does not render a conversation "
                    "as its turns one after another, so the assistant turns cannot be told apart"
                )
            pieces.extend(self._context(full[done : len(before)]))
            target = self._ended(self.encode(full[len(before) : len(through)]))
            pieces.append(Piece(tuple(target), target=True))
            done = len(through)
        pieces.extend(self._context(full[done:]))
        return pieces

    def _render_text(self, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
        if not messages and not generation_prompt:
            return ""
        with self._bounded():
            return str(
                self._tok.apply_chat_template(
                    messages, add_generation_prompt=generation_prompt, tokenize=False
                )
            )

    def _context(self, text: str) -> list[Piece]:
        placeholder = self.video_item or VIDEO_PLACEHOLDER
        return [
            VIDEO if part is None else Piece(tuple(self.encode(part)))
            for part in split_placeholder(text, placeholder)
        ]


def build_tokenizer(data: DataConfig, model: ModelConfig | None = None) -> Tokenizer:
    """The LM's own tokenizer for Hugging Face LMs (``model.family=hf``), the VLM's for
    ``model=pretrained``; otherwise ``data.tokenizer`` empty: ``ByteTokenizer``, else
    ``HFTokenizer`` on that path."""
    from kvideo.hf_folders import resolve_model_folder

    if model is not None and model.pretrained_parts:
        return ChatTokenizer(str(resolve_model_folder("model.lm_path", model.lm_path)))
    if model is not None and model.pretrained_model:
        from kvideo.hf_folders import video_vlm_geometry

        folder = resolve_model_folder("model.path", model.path)
        return ChatTokenizer(
            str(folder),
            field="model.path",
            captions_as_conversations=True,
            trust_remote_code=model.trust_remote_code,
            video_item=video_vlm_geometry("model.path", folder).video_item,
        )
    if not data.tokenizer:
        return ByteTokenizer()
    return HFTokenizer(data.tokenizer)
