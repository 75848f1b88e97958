"""Memory checks: a config whose frames or model cannot fit is refused before any work, with
the arithmetic, instead of being OOM-killed minutes later (``video.frame_size=65536`` grew to
22.5 GB in 110 s) or crashing in the allocator. The terms are ``kvideo.preflight.memory_terms``'.

Every figure is a lower bound (see the terms' module), so a refusal is certain.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kvideo.preflight.frames import padded_tokens
from kvideo.preflight.memory_terms import (
    BYTE_VOCAB,
    FRAME_FIELDS,
    HEADROOM,
    SHOWN_SHARE,
    Term,
    batch_frames,
    format_bytes,
    frame_numbers,
    gpu_decoded_frames_term,
    host_terms,
    training_device_terms,
    uint8_batch_bytes,
)
from kvideo.resources import MemoryLimit, gpu_visible, memory_limit, processes_per_node

if TYPE_CHECKING:
    from kvideo.config.root import KVideoConfig


def require_fits(
    terms: list[Term], limit: MemoryLimit, where: str, processes: tuple[int, str] = (1, "")
) -> None:
    """Refuse when the terms (times the processes sharing the memory) pass ``HEADROOM`` of the
    limit; the message lists every term, largest first, with its arithmetic."""
    count, variable = processes
    per_process = sum(t.bytes for t in terms)
    need = per_process * count
    if need <= HEADROOM * limit.bytes:
        return
    times = f" ({format_bytes(per_process)} per process * {count} processes, {variable})" if count > 1 else ""
    ordered = sorted(terms, key=lambda t: t.bytes, reverse=True)
    shown = [t for t in ordered if t.bytes >= SHOWN_SHARE * per_process]
    rest = ordered[len(shown) :]
    parts = [str(t) for t in shown]
    if rest:
        parts.append(f"{len(rest)} smaller terms = {format_bytes(sum(t.bytes for t in rest))}")
    raise ValueError(
        f"{where} memory: this run needs at least {format_bytes(need)}{times} > {HEADROOM:.0%} of "
        f"{format_bytes(limit.bytes)} ({limit.source}): " + "; ".join(parts) + f"; lower {ordered[0].lower}"
    )


def token_budget_clips(cfg: KVideoConfig) -> int:
    """The fewest clips a ``data.batch_tokens`` batch holds: the budget over the most a clip can
    cost (``VideoClipDataset.token_costs``: visual tokens plus its text, or the padded length).
    The fewest, so that every term stays a lower bound."""
    return max(1, cfg.data.batch_tokens // padded_tokens(cfg.video, cfg.model, cfg.data.max_visuals))


@contextlib.contextmanager
def sized_by_token_budget(cfg: KVideoConfig) -> Iterator[KVideoConfig]:
    """``cfg`` whose ``trainer.batch_size`` is ``token_budget_clips`` under ``data.batch_tokens``
    (what the terms size a batch by), a refusal then saying so."""
    if not cfg.data.batch_tokens:
        yield cfg
        return
    clips = token_budget_clips(cfg)
    try:
        yield dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, batch_size=clips))
    except ValueError as e:
        raise ValueError(
            f"{e} (data.batch_tokens={cfg.data.batch_tokens}: trainer.batch_size above is the fewest "
            f"clips such a batch holds, {clips}; lower data.batch_tokens)"
        ) from None


def compose_time_vocab(cfg: KVideoConfig) -> int:
    """Byte-level: 259. A tokenizer.json or an LM's tokenizer: 0 (unknown until loaded; a lower bound)."""
    return 0 if cfg.data.tokenizer or cfg.model.hub_model else BYTE_VOCAB


def trains_on_host(device: str, *, gpu: bool | None = None) -> bool:
    """``cpu``, or ``auto`` with no GPU visible (``resources.gpu_visible``, torch-free)."""
    return device == "cpu" or (device == "auto" and not (gpu_visible() if gpu is None else gpu))


def check_fits_in_memory(
    cfg: KVideoConfig,
    *,
    limit: MemoryLimit | None = None,
    processes: tuple[int, str] | None = None,
    on_host: bool | None = None,
) -> None:
    """Compose-time host check, against this machine unless told otherwise (``config_from``
    passes the SLURM job's ``mem_gb`` for sweep points that will run on a compute node)."""
    limit = memory_limit() if limit is None else limit
    if limit is None:  # not Linux: nothing to compare against
        return
    on_host = trains_on_host(cfg.trainer.device) if on_host is None else on_host
    with sized_by_token_budget(cfg) as sized:
        terms = host_terms(sized, trains_on_host=on_host, vocab_size=compose_time_vocab(sized))
        require_fits(terms, limit, "host", processes_per_node() if processes is None else processes)


def check_fits_on_gpu(
    cfg: KVideoConfig,
    *,
    total_bytes: int,
    bf16: bool,
    vocab_size: int = BYTE_VOCAB,
    device: str = "cuda",
    ranks: int = 1,
) -> None:
    """Trainer start-up check for a CUDA device (compose time cannot ask the GPU without torch).

    Call it once the device is known, before building the model, e.g.
    ``check_fits_on_gpu(cfg, total_bytes=torch.cuda.mem_get_info(dev)[1],
    bf16=autocast_dtype == torch.bfloat16, vocab_size=tokenizer.vocab_size, device=str(dev))``.
    ``total_bytes`` is the device's total, not its momentary free memory, for the reason
    ``resources.memory_limit`` gives. Activations count 2 B a value under bf16 autocast.
    ``ranks``: the world size under ``trainer.strategy=fsdp`` (each rank holds its share of the
    model states). Raises ``ValueError`` with the arithmetic.
    """
    with sized_by_token_budget(cfg) as sized:
        terms = training_device_terms(sized, value_bytes=2 if bf16 else 4, vocab_size=vocab_size, ranks=ranks)
        if sized.decoder.decodes_on_gpu:
            terms.append(gpu_decoded_frames_term(sized))
        else:
            terms.append(
                Term(
                    "frames copied to the device",
                    f"{batch_frames(cfg)} * video.frame_size^2 * 3 B",
                    f"{frame_numbers(sized)} * 3 B",
                    uint8_batch_bytes(sized),
                    FRAME_FIELDS,
                )
            )
        require_fits(terms, MemoryLimit(total_bytes, f"total memory of {device}"), device)


def check_fits_where_it_runs(cfg: KVideoConfig, launcher: dict[str, Any]) -> None:
    """The host check against the machine the run will use.

    ``launcher`` holds ``hydra.launcher``'s ``_target_``, ``mem_gb``, ``tasks_per_node`` and
    ``gpus_per_node`` when the config carries the hydra node (sweep points in the multirun
    callback do; a job's own config does not, and a job runs where it is checked). Jobs of the
    slurm launcher run on a compute node, not on the submitting login node: they are checked
    against the job's ``mem_gb`` (GiB per node, shared by ``tasks_per_node`` tasks), and not at
    all when it is unset; each job checks again on its node at start (``train.py``).
    """
    if not str(launcher.get("_target_") or "").endswith("SlurmLauncher"):
        check_fits_in_memory(cfg)
        return
    mem_gb = launcher.get("mem_gb")
    if not mem_gb:
        return
    tasks = int(launcher.get("tasks_per_node") or 1)
    gpus = int(launcher.get("gpus_per_node") or 0)
    limit = MemoryLimit(int(float(mem_gb) * 2**30), f"hydra.launcher.mem_gb={mem_gb}")
    check_fits_in_memory(
        cfg,
        limit=limit,
        processes=(tasks, "hydra.launcher.tasks_per_node"),
        on_host=trains_on_host(cfg.trainer.device, gpu=gpus > 0),
    )
