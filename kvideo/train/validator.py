"""Validation during and after training: the split is built once, at the first validation,
and every later one reuses it.

Built lazily rather than at start-up so that a run without a validation split (a manifest
with no ``validation`` rows) still trains: the first validation says once that there is none,
and every later one returns no numbers. Like the training stream it keeps the global torch
RNG untouched (``rng_neutral``), so validating does not change what training draws next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from torch import nn

from kvideo.config import KVideoConfig
from kvideo.data.settings import ClipSettings
from kvideo.train.distributed import DistEnv
from kvideo.train.evaluate import CaptionEncoder, ScoredSplit, evaluate
from kvideo.train.metrics import now
from kvideo.train.report import RUN_LOG
from kvideo.train.stream import rng_neutral


class Validator:
    """``validate(model)`` -> validation metrics over the whole split (or the first
    ``trainer.val_max_batches`` batches), reduced over ranks: a collective.

    It takes the run's config: the trainer's validation cadence and sizes, the prompt, the model
    family and caption length; and the ``ClipSettings`` the data code reads (``clips``).
    """

    def __init__(
        self,
        cfg: KVideoConfig,
        env: DistEnv,
        clips: ClipSettings,
        *,
        tokenizer: Any,
        decode_gpu: int,
        autocast: Callable[[], Any],
        lockstep: bool = False,
    ) -> None:
        self.cfg, self.env, self.clips = cfg, env, clips
        self.lockstep = lockstep  # every forward is a collective (``Strategy.lockstep_forwards``)
        self.tokenizer = tokenizer
        self.decode_gpu = decode_gpu
        self.autocast = autocast
        self._dataset: Any = None
        self._unavailable: str | None = None  # why there is no validation split, once known
        self._batches: Any = None  # DecodeOnce over the split, made at the first validation
        self._prediction_samples: list[dict[str, Any]] | None = None  # decoded once, too

    def should_validate(self, step: int) -> bool:
        """Whether to validate after ``step``: every ``trainer.val_every`` steps, but for the last
        step, whose validation is the final one (run after the loader workers are gone)."""
        trainer = self.cfg.trainer
        return bool(trainer.val_every) and step % trainer.val_every == 0 and step < trainer.max_steps

    def validate(
        self, model: nn.Module, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        """Validation metrics (plus ``val_time_s``), or {} when there is no validation split.

        ``model`` is the unwrapped module (a DDP forward would wait for the other ranks'
        backward), or the FSDP one, whose forwards every rank runs in lockstep (``evaluate``).
        The clips are decoded at the first validation and replayed after it, within
        ``data.val_cache_mb`` (``kvideo.data.decode_once``). ``progress(done, total)`` is told
        this rank's clips after each batch.
        """
        dataset = self._validation_set()
        if dataset is None:
            return {}
        from kvideo.data.decode_once import DecodeOnce
        from kvideo.data.loader import to_device

        trainer = self.cfg.trainer
        if self._batches is None:
            self._batches = DecodeOnce(partial(self._open_batches, dataset), self.cfg.data.val_cache_mb << 20)
        statistics = self.clips.statistics
        batches: Iterable[dict[str, Any]] = (
            to_device(batch, self.env.device, statistics) for batch in self._batches
        )
        if progress is not None:
            batches = _told(batches, progress, self._clips_per_rank(len(dataset)))
        t0 = now()
        with rng_neutral():
            result = evaluate(
                model,
                batches,
                encoder=CaptionEncoder(self.tokenizer, self.cfg.video.prompt, self.cfg.model.max_text_len),
                split=ScoredSplit.of(dataset),
                env=self.env,
                max_batches=trainer.val_max_batches,
                max_rows=4 * trainer.batch_size,
                autocast=self.autocast,
                lockstep=self.lockstep,
            )
        result["val_time_s"] = now() - t0
        return result

    def _open_batches(self, dataset: Any, start_sample: int) -> Iterable[dict[str, Any]]:
        """This rank's collated validation batches from its ``start_sample``-th clip on."""
        from kvideo.data.loader import collated_batches

        return collated_batches(
            dataset,
            rank=self.env.rank,
            world_size=self.env.world_size,
            shuffle=False,
            batch_size=self.cfg.trainer.batch_size,
            drop_last=False,
            device=self.env.device,
            start_sample=start_sample,
        )

    def _clips_per_rank(self, num_samples: int) -> int:
        """The clips this rank reads in one validation (the split is padded to whole ranks)."""
        per_rank = -(-num_samples // self.env.world_size)
        cap = self.cfg.trainer.val_max_batches * self.cfg.trainer.batch_size
        return min(per_rank, cap) if cap else per_rank

    def predictions(self, model: nn.Module) -> list[dict[str, str]]:
        """Generated captions (answers, for a conversation dataset) of the first
        ``trainer.val_predictions`` validation clips beside their references (rank 0's; other
        ranks return []): what the numbers mean, readable. An FSDP model's ranks all caption
        the same clips, in lockstep, since each of its forwards is a collective."""
        count = min(self.cfg.trainer.val_predictions, len(self._dataset or ()))
        lockstep = self.lockstep
        if count == 0 or not (self.env.is_main or lockstep):
            return []
        from kvideo.data.loader import collate, to_device
        from kvideo.model.spec import model_spec

        with rng_neutral():
            samples = self._prediction_clips(count)
            batch = to_device(collate(samples), self.env.device, self.clips.statistics)
            captions = model_spec(self.cfg.model.family).generate(
                model,
                batch,
                self.tokenizer,
                prompt=self.cfg.video.prompt,
                max_new_tokens=self.cfg.model.max_text_len,
                autocast=self.autocast,
                synced=lockstep,
            )
        if not self.env.is_main:
            return []
        return [
            {"video": s["path"], "reference": s["caption"], "generated": c}
            for s, c in zip(samples, captions, strict=True)
            if not s["skip_reason"]
        ]

    def _prediction_clips(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` validation clips, decoded at the first call and kept in host
        memory when ``data.val_cache_mb`` allows any cache (they are few: ``val_predictions``)."""
        if self._prediction_samples is not None:
            return self._prediction_samples
        from kvideo.data.decode_once import on_host

        samples = [on_host(self._dataset[i]) for i in range(count)]
        if self.cfg.data.val_cache_mb:
            self._prediction_samples = samples
        return samples

    def answer_metrics(self, predictions: list[dict[str, str]]) -> dict[str, float]:
        """``val_short_exact_match`` (and ``val_short_answers``) of a conversation dataset's
        generated answers against the references, over ``predictions`` (rank 0's, see
        ``predictions``): exact match is what short answers are judged by. {} otherwise."""
        if not predictions or not getattr(self._dataset, "conversational", False):
            return {}
        from kvideo.train.caption_metrics import short_answer_exact_match

        scores = short_answer_exact_match(
            [row["reference"] for row in predictions], [row["generated"] for row in predictions]
        )
        return {f"val_{name}": value for name, value in scores.items()}

    def _validation_set(self) -> Any:
        """The validation dataset, built at the first call; ``None`` when there is none."""
        if self._unavailable is not None:
            return None
        if self._dataset is None:
            from kvideo.data.loader import build_dataset

            try:
                self._dataset = build_dataset(
                    self.clips,
                    split="validation",
                    tokenizer=self.tokenizer,
                    local_rank=self.decode_gpu,
                )
            except (ValueError, FileNotFoundError) as e:
                self._unavailable = str(e)
                RUN_LOG.warning("no validation: %s", e)
                return None
        return self._dataset


def _told(
    batches: Iterable[dict[str, Any]], progress: Callable[[int, int], None], total: int
) -> Iterator[dict[str, Any]]:
    """``batches``, telling ``progress`` the clips read so far after each one."""
    done = 0
    for batch in batches:
        yield batch
        done += len(batch["skip_reason"])
        progress(min(done, total), total)
