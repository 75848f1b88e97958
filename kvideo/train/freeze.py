"""What trains at each optimizer step: ``model.freeze``, then ``model.freeze_schedule``'s stages.

The candidates are the parameters that train when the model is built: every one for the
builtin models, and for a LoRA LM its adapters only (peft freezes the LM's own weights). A part
(``vision``, ``projector``, ``lm``) stands for the patterns ``<part>`` and ``<part>.*``, as
KempnerForge's module aliases do, so freezing a part cannot miss a parameter; any other entry
is an fnmatch pattern of parameter names and must match at least one.

The set is a pure function of the step, so a resumed run recomputes it from its checkpoint's
step: a stage change survives a restart without being stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from kvideo.config.model import ModelConfig, is_part_name
from kvideo.model.spec import first_component


@dataclass(frozen=True)
class _Stage:
    start_step: int
    freeze: tuple[str, ...]
    unfreeze: tuple[str, ...]


class TrainableSchedule:
    """``at(step)``: the names of the parameters that train at optimizer step ``step`` (0-based);
    ``apply(step)`` sets ``requires_grad`` accordingly.

    ``part_of``: the part a parameter name belongs to (the model family's ``ModelSpec.part_of``;
    by default the name's first component, the builtin and ``hf`` models' attributes)."""

    def __init__(
        self, model: nn.Module, cfg: ModelConfig, *, part_of: Callable[[str], str] = first_component
    ) -> None:
        self.part_of = part_of
        self.params = dict(model.named_parameters())
        self.candidates = frozenset(name for name, p in self.params.items() if p.requires_grad)
        self.stages = [_Stage(0, tuple(cfg.freeze), ())] + [
            _Stage(s.start_step, tuple(s.freeze), tuple(s.unfreeze)) for s in cfg.freeze_schedule
        ]
        self._check_patterns(cfg)
        self.current: frozenset[str] | None = None
        self._applied_stage = -1
        for stage in self.stages:
            if not self.at(stage.start_step):
                raise ValueError(
                    f"nothing trains from step {stage.start_step} on: model.freeze / model.freeze_schedule "
                    f"freeze every trainable parameter ({len(self.candidates):,} candidates)"
                )

    def _check_patterns(self, cfg: ModelConfig) -> None:
        fields = [("model.freeze", cfg.freeze)] + [
            (f"model.freeze_schedule[{i}]", [*s.freeze, *s.unfreeze])
            for i, s in enumerate(cfg.freeze_schedule)
        ]
        example = next(iter(self.params), "")
        for field, entries in fields:
            for entry in entries:
                if not self._matching(entry, self.params):
                    raise ValueError(
                        f"{field}: {entry!r} matches no parameter of the model (names look like {example!r})"
                    )

    def _matching(self, entry: str, names: Iterable[str]) -> set[str]:
        if is_part_name(entry):
            return {n for n in names if self.part_of(n) == entry}
        return {n for n in names if fnmatchcase(n, entry)}

    def at(self, step: int) -> frozenset[str]:
        trainable = set(self.candidates)
        for stage in self.stages:
            if stage.start_step > step:
                break
            for entry in stage.freeze:
                trainable -= self._matching(entry, trainable)
            for entry in stage.unfreeze:
                trainable |= self._matching(entry, self.candidates)
        return frozenset(trainable)

    def ever(self) -> frozenset[str]:
        """Every parameter that trains at some step: what the optimizer and checkpoints hold."""
        out: set[str] = set()
        for stage in self.stages:
            out |= self.at(stage.start_step)
        return frozenset(out)

    def stage_index(self, step: int) -> int:
        return max(i for i, s in enumerate(self.stages) if s.start_step <= step)

    def apply(self, step: int) -> bool:
        """Set ``requires_grad`` for ``step``; returns whether the trainable set changed. Called
        every step: within a stage it only compares the stage index."""
        stage = self.stage_index(step)
        if stage == self._applied_stage:
            return False
        self._applied_stage = stage
        trainable = self.at(step)
        if trainable == self.current:
            return False
        for name, param in self.params.items():
            param.requires_grad_(name in trainable)
        changed = self.current is not None
        self.current = trainable
        return changed


def unreached_stages(cfg: ModelConfig, max_steps: int) -> list[str]:
    """A line for each ``model.freeze_schedule`` stage that starts at or after ``max_steps``:
    it takes no effect in this run (a resume with more steps reaches it), which a user who set
    it meant to see."""
    return [
        f"model.freeze_schedule[{i}] starts at step {stage.start_step}, not before trainer.max_steps="
        f"{max_steps}: it takes no effect in this run"
        for i, stage in enumerate(cfg.freeze_schedule)
        if stage.start_step >= max_steps
    ]
