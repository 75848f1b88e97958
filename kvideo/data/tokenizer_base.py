"""The tokenizer interface (``Tokenizer``), what every tokenizer shares (``TokenizerBase``) and the
download-free byte tokenizer (the default). ``kvideo.data.hf_tokenizers`` has the Hugging Face
ones; ``kvideo.data.tokenizer.build_tokenizer`` picks one.

All expose one small interface so the per-sample code never branches on which one it has.
Torch-free: tokenization happens once per row in the dataset and produces plain lists.

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

from collections.abc import Sequence
from typing import Protocol

from kvideo.data.conversation import IGNORE_INDEX, VIDEO, Piece, split_placeholder
from kvideo.data.rows import Turn


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


class TokenizerBase:
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


class ByteTokenizer(TokenizerBase):
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
