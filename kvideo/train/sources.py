"""``SourceTally``: what each source of ``data.mixture`` gave the training steps.

For each source: the samples ``seen`` and ``skipped`` since the run started (a resumed run reads
them back from its checkpoint, so they count the whole run), and the ``loss`` of its samples
over the current log window (the mean over their caption tokens, as the run's loss is). The loss
sums stay on the training device between log steps, so counting costs no host sync per step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from kvideo.train.distributed import DistEnv, all_reduce_sum

# How the counts are kept in a checkpoint's per-rank ``skipped`` entry, beside the skip reasons.
SEEN, SKIPPED = "source_seen:", "source_skipped:"


def source_counts(counts: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """A checkpoint's per-rank counts split into ``(skip reasons, source counts)``."""
    sources = {k: v for k, v in counts.items() if k.startswith((SEEN, SKIPPED))}
    return {k: v for k, v in counts.items() if k not in sources}, sources


class SourceTally:
    """This rank's counts per source; ``window`` sums them over the ranks (a collective)."""

    def __init__(
        self, names: Sequence[str], device: torch.device, counts: Mapping[str, int] | None = None
    ) -> None:
        self.names = list(names)
        self.index = {name: k for k, name in enumerate(self.names)}
        saved = dict(counts or {})
        self.seen = Counter({name: saved.get(SEEN + name, 0) for name in self.names})
        self.skipped = Counter({name: saved.get(SKIPPED + name, 0) for name in self.names})
        self.nll = torch.zeros(len(self.names), dtype=torch.float32, device=device)
        self.tokens = torch.zeros(len(self.names), dtype=torch.float32, device=device)

    def add(self, batch: Mapping[str, Any], out: Mapping[str, torch.Tensor]) -> None:
        """One micro-batch: its items' ``source`` names and skip reasons, and the model's
        per-sample ``nll`` and ``ntokens`` (a skipped item has no loss tokens)."""
        if not self.names or "source" not in batch:
            return
        for name, reason in zip(batch["source"], batch["skip_reason"], strict=True):
            self.seen[name] += 1
            self.skipped[name] += bool(reason)
        index = torch.tensor([self.index[name] for name in batch["source"]], device=self.nll.device)
        self.nll.index_add_(0, index, out["nll"].detach().float())
        self.tokens.index_add_(0, index, out["ntokens"].detach().float())

    def counts(self) -> dict[str, int]:
        """What this rank's checkpoint entry keeps (``source_counts`` reads it back)."""
        return {SEEN + n: self.seen[n] for n in self.names} | {
            SKIPPED + n: self.skipped[n] for n in self.names
        }

    def window(self, env: DistEnv) -> dict[str, dict[str, Any]]:
        """``{name: {seen, skipped, loss}}`` over every rank; ``loss`` is over the window since the
        last call (``None`` when none of the source's samples had a loss token in it)."""
        if not self.names:
            return {}
        local = (
            self.nll.tolist()
            + self.tokens.tolist()
            + [float(self.seen[n]) for n in self.names]
            + [float(self.skipped[n]) for n in self.names]
        )
        summed = all_reduce_sum(local, env)
        self.nll.zero_()
        self.tokens.zero_()
        k = len(self.names)
        return {
            name: {
                "seen": int(summed[2 * k + i]),
                "skipped": int(summed[3 * k + i]),
                "loss": summed[i] / summed[k + i] if summed[k + i] else None,
            }
            for i, name in enumerate(self.names)
        }
