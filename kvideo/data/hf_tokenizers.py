"""The Hugging Face tokenizers: a local ``tokenizer.json`` (``data.tokenizer``, through the
``tokenizers`` library) and an LM's or VLM's own (``AutoTokenizer``, offline), captions framed by
its chat template. Picked by ``kvideo.data.tokenizer.build_tokenizer``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvideo.data.conversation import VIDEO, VIDEO_PLACEHOLDER, Piece, split_placeholder
from kvideo.data.rows import Turn
from kvideo.data.tokenizer_base import TokenizerBase
from kvideo.time_limit import time_limit

# Common spellings of the special tokens in published tokenizer.json files.
_SPECIAL_NAMES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "bos": ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]", "<|im_start|>"),
    "eos": ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "[SEP]", "<|im_end|>"),
}


class HFTokenizer(TokenizerBase):
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


class ChatTokenizer(TokenizerBase):
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
