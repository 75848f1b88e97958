"""The best validation so far (``trainer.keep_best``): which step, what value, where its weights
are.

A run's last checkpoint is where training stopped, not where it was best: in the default run
``val_loss`` was lowest at step 900 of 1200. Each validation that beats the best value writes a
best checkpoint (``Checkpointer.save(best=True)``) and ``checkpoints/best.json``, which a resumed
run reads back, so the best survives preemption. ``final.json`` records it as ``best``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvideo.config import TrainerConfig
from kvideo.files import write_text_atomic
from kvideo.train.distributed import DistEnv, all_gather_objects

BEST_INFO = "best.json"


@dataclass
class Best:
    """The best validation: ``step``, ``metric``, ``value`` and the checkpoint ``path``."""

    step: int
    metric: str
    value: float
    path: str


class BestKeeper:
    """Decides whether a validation is the best so far (every rank alike: the metrics are the
    same on every rank) and remembers it."""

    def __init__(self, ckpt_dir: Path, metric: str, mode: str) -> None:
        self.info = ckpt_dir / BEST_INFO
        self.metric = metric
        self.mode = mode
        self.best = self._saved()
        self.missing_reported = False

    @classmethod
    def for_run(cls, ckpt_dir: Path, trainer: TrainerConfig) -> BestKeeper | None:
        """The keeper ``trainer.keep_best`` asks for, or None when it is empty (no best kept)."""
        return cls(ckpt_dir, trainer.keep_best, trainer.keep_best_mode) if trainer.keep_best else None

    def _saved(self) -> Best | None:
        """The best a previous launch of this run recorded, for the same metric and mode."""
        try:
            saved = json.loads(self.info.read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(saved, dict)
            or saved.get("metric") != self.metric
            or saved.get("mode") != self.mode
        ):
            return None
        try:
            return Best(int(saved["step"]), self.metric, float(saved["value"]), str(saved["path"]))
        except (KeyError, TypeError, ValueError):
            return None

    def consider(
        self,
        result: dict[str, Any],
        step: int,
        env: DistEnv,
        *,
        save: Callable[[], Path],
        say: Callable[[str], None],
    ) -> None:
        """Checkpoint ``step`` as the best (``save``) when its validation ``result`` beats the best
        so far. Rank 0 decides for all (answer metrics are computed on rank 0 alone): the save is
        a collective. A metric the validation does not compute is said once."""
        decision = (self.metric in result, self.improves(result), result.get(self.metric))
        present, better, value = all_gather_objects(decision, env)[0]
        if not present:
            if not self.missing_reported:
                self.missing_reported = True
                say(
                    f"trainer.keep_best={self.metric} is not among this run's validation metrics "
                    f"({', '.join(sorted(k for k in result if not k.endswith('_s')))}): no best "
                    "checkpoint is kept"
                )
            return
        if better:
            self.record(step, float(value), save(), write=env.is_main)

    def improves(self, result: dict[str, Any]) -> bool:
        """Whether ``result`` (one validation's metrics) beats the best so far; a non-finite value
        never does."""
        value = result.get(self.metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best.value if self.mode == "min" else value > self.best.value

    def record(self, step: int, value: float, path: Path, *, write: bool) -> None:
        """``step``'s ``value`` is the best now, its checkpoint at ``path``; ``write``: rank 0
        writes ``best.json``."""
        self.best = Best(step, self.metric, float(value), str(path))
        if write:
            write_text_atomic(
                self.info, json.dumps({**asdict(self.best), "mode": self.mode}, indent=2) + "\n"
            )

    def summary(self) -> dict[str, Any] | None:
        """``final.json``'s ``best``."""
        return None if self.best is None else asdict(self.best)
