"""What generated captions are worth against the references (validation and ``eval.py``).

* ``bleu`` (corpus BLEU-4) and ``chrf`` from ``sacrebleu``, the maintained reference
  implementation of both;
* ``exact_match``: generated == reference, ignoring case, surrounding space and a final full
  stop; and ``short_exact_match`` (with its count ``short_answers``), the same over the references
  of at most ``SHORT_ANSWER_WORDS`` words, where exact match is the standard answer metric
  (question answering: "yes", "three", "to the left").
"""

from __future__ import annotations

SHORT_ANSWER_WORDS = 5


def _same_answer(generated: str, reference: str) -> bool:
    def norm(text: str) -> str:
        return " ".join(text.lower().split()).rstrip(".")

    return norm(generated) == norm(reference)


def short_answer_exact_match(references: list[str], generated: list[str]) -> dict[str, float]:
    """``short_exact_match`` (0-1) over the references of at most ``SHORT_ANSWER_WORDS`` words,
    and their count ``short_answers``; {} when there is none."""
    pairs = [
        (r, g) for r, g in zip(references, generated, strict=True) if len(r.split()) <= SHORT_ANSWER_WORDS
    ]
    if not pairs:
        return {}
    right = sum(_same_answer(g, r) for r, g in pairs)
    return {"short_exact_match": right / len(pairs), "short_answers": float(len(pairs))}


def caption_metrics(references: list[str], generated: list[str]) -> dict[str, float]:
    """Corpus BLEU-4 and chrF (sacrebleu, 0-100) and the exact-match rates (0-1)."""
    if not references:
        return {}
    import sacrebleu

    pairs = zip(generated, references, strict=True)
    return {
        "bleu": float(sacrebleu.corpus_bleu(generated, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(generated, [references]).score),
        "exact_match": sum(_same_answer(g, r) for g, r in pairs) / len(references),
        **short_answer_exact_match(references, generated),
    }
