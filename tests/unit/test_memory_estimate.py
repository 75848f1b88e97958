"""The compose-time memory estimate (kvideo/preflight/memory.py) and the machine facts it is compared
against (kvideo/resources.py): the parameter count matches the built model, the activation figure
stays below what autograd really keeps, limits come from cgroups and /proc/meminfo (fake files in
tmp_path, passed as arguments), and refusals show their arithmetic."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import DecoderConfig, KVideoConfig, ModelConfig, TrainerConfig, VideoConfig
from kvideo.preflight.memory import (
    check_fits_in_memory,
    check_fits_on_gpu,
    check_fits_where_it_runs,
    require_fits,
)
from kvideo.preflight.memory_terms import (
    BYTE_VOCAB,
    PREFETCH_FACTOR,
    Term,
    format_bytes,
    lm_activation_terms,
    vision_activation_terms,
)
from kvideo.preflight.model_size import estimate_params
from kvideo.resources import (
    MemoryLimit,
    available_memory_bytes,
    gpu_visible,
    meminfo_total,
    memory_limit,
    processes_per_node,
)

GiB = 2**30
SAMPLE: dict[str, Any] = {"dataset_type": "sample"}

# (model overrides, video overrides): the tiny default (linear stem, motion tokens), a conv stem,
# and small_vlm's shape at 224 px.
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "tiny_vlm": (
        {"tokens_per_frame": 16, "motion_tokens": True, "max_seq_len": 384},
        {"frame_size": 64, "max_frames": 8},
    ),
    "conv_stem": (
        {"tokens_per_frame": 16, "patch_stem": "conv", "max_seq_len": 384},
        {"frame_size": 64, "max_frames": 8},
    ),
    "small_vlm_224": (
        {
            "vision_width": 384,
            "vision_depth": 6,
            "vision_heads": 6,
            "tokens_per_frame": 16,
            "lm_width": 512,
            "lm_depth": 8,
            "lm_heads": 8,
            "max_seq_len": 1024,
            "max_text_len": 128,
        },
        {"frame_size": 224, "max_frames": 8},
    ),
}


def make_cfg(model: dict | None = None, video: dict | None = None, **trainer) -> KVideoConfig:
    return KVideoConfig(
        video=VideoConfig(**{**SAMPLE, **(video or {})}),
        model=ModelConfig(**(model or {})),
        trainer=TrainerConfig(**trainer),
    )


def shape_cfg(name: str, **trainer) -> KVideoConfig:
    model, video = SHAPES[name]
    return make_cfg(model, video, **trainer)


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("tie", [True, False])
def test_estimated_parameters_match_the_built_model(name: str, tie: bool) -> None:
    from kvideo.model.spec import ModelSizes
    from kvideo.model.vlm import build_builtin_model, count_parameters

    cfg = shape_cfg(name)
    video = cfg.video
    sizes = ModelSizes(BYTE_VOCAB, video.max_frames, video.frame_size)
    model = build_builtin_model(cfg.model, sizes, tie_embeddings=tie)
    real = count_parameters(model)
    estimate = estimate_params(cfg.model, BYTE_VOCAB, video.max_frames, video.frame_size, tie_embeddings=tie)
    assert abs(estimate - real) <= 0.01 * real, (estimate, real)


def saved_activation_bytes(cfg: KVideoConfig) -> int:
    """Bytes of the tensors autograd keeps for backward in one training forward (weights and the
    input frames excluded), each storage counted once."""
    from kvideo.model import build_model

    b, f, s, text = cfg.trainer.batch_size, cfg.video.max_frames, cfg.video.frame_size, cfg.model.max_text_len
    model = build_model(cfg.model, vocab_size=BYTE_VOCAB, max_frames=f, frame_size=s)
    frames = torch.randn(b, f, 3, s, s)
    ids = torch.randint(0, 256, (b, text))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(frames, torch.ones(b, f, dtype=torch.bool), ids, ids)
    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
    excluded.add(frames.untyped_storage().data_ptr())
    return sum(n for ptr, n in storages.items() if ptr not in excluded)


@pytest.mark.parametrize("name", ["tiny_vlm", "conv_stem"])
def test_activation_estimate_is_a_lower_bound_close_to_what_autograd_keeps(name: str) -> None:
    cfg = shape_cfg(name, batch_size=2)
    estimate = sum(t.bytes for t in vision_activation_terms(cfg, 4) + lm_activation_terms(cfg, 4, BYTE_VOCAB))
    real = saved_activation_bytes(cfg)
    assert 0.6 * real <= estimate <= real, (format_bytes(estimate), format_bytes(real))


def test_the_estimate_uses_the_loaders_prefetch_factor() -> None:
    from kvideo.data import loader

    assert f"prefetch_factor={PREFETCH_FACTOR} if workers" in inspect.getsource(loader.collated_batches)


def test_every_decoder_not_declared_on_the_gpu_returns_cpu_frames(tmp_path) -> None:
    """``DecoderConfig.decodes_on_gpu`` is what the loader and the estimate believe: check it
    against what each registered decoder really returns (GPU ones cannot run here)."""
    from kvideo.decode import decode_at
    from kvideo.registry import DECODERS
    from tests.helpers.videos import make_h264

    on_gpu = {name for name in DECODERS.names() if DecoderConfig(name=name).decodes_on_gpu}
    assert on_gpu == {"decord_gpu", "nvdec"}
    clip = make_h264(tmp_path / "clip.mp4", seconds=0.2)
    for name in sorted(set(DECODERS.names()) - on_gpu):
        assert decode_at(clip, [0.0], decoder=name).frames.device.type == "cpu", name


# ----------------------------------------------------------------------------- refusals


def test_format_bytes_uses_binary_units() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1.5 * 2**40) == "1.5 TiB"
    assert format_bytes(21.3 * GiB) == "21.3 GiB"


def test_a_refusal_lists_the_largest_terms_with_their_arithmetic_and_sums_the_rest() -> None:
    terms = [Term("big", "a * b", "3 * 4 GiB", 12 * GiB, "a or b"), Term("tiny", "c", "1 B", 1, "c")]
    with pytest.raises(ValueError) as err:
        require_fits(terms, MemoryLimit(10 * GiB, "test limit"), "host")
    assert str(err.value) == (
        "host memory: this run needs at least 12.0 GiB > 90% of 10.0 GiB (test limit): "
        "big = a * b = 3 * 4 GiB = 12.0 GiB; 1 smaller terms = 1 B; lower a or b"
    )


def test_up_to_ninety_percent_of_the_limit_is_accepted() -> None:
    terms = [Term("t", "x", "x", 9 * GiB, "x")]
    require_fits(terms, MemoryLimit(10 * GiB, "test"), "host")
    with pytest.raises(ValueError, match=r"> 90% of 10\.0 GiB"):
        require_fits([*terms, Term("u", "y", "y", 1, "y")], MemoryLimit(10 * GiB, "test"), "host")


def test_processes_sharing_the_node_multiply_the_estimate() -> None:
    terms = [Term("t", "x", "x", 3 * GiB, "x")]
    require_fits(terms, MemoryLimit(10 * GiB, "test"), "host", (3, "LOCAL_WORLD_SIZE"))
    with pytest.raises(
        ValueError,
        match=r"12\.0 GiB \(3\.0 GiB per process \* 4 processes, "
        r"LOCAL_WORLD_SIZE\) > 90% of 10\.0 GiB",
    ):
        require_fits(terms, MemoryLimit(10 * GiB, "test"), "host", (4, "LOCAL_WORLD_SIZE"))


def test_frames_in_flight_count_every_workers_prefetched_batches() -> None:
    cfg = make_cfg(video={"frame_size": 4096, "max_frames": 8}, batch_size=4096, num_workers=2)
    with pytest.raises(ValueError) as err:
        check_fits_in_memory(cfg, limit=MemoryLimit(24 * GiB, "test"), processes=(1, ""), on_host=False)
    assert (
        "frames in flight = trainer.batch_size * video.max_frames * video.frame_size^2 * 3 B * "
        "(trainer.num_workers * 4 prefetched + 1 in training) batches = 4096 * 8 * 4096^2 * 3 B "
        "* (2 * 4 + 1) = 13.5 TiB"
    ) in str(err.value)


def test_model_states_count_sixteen_bytes_a_parameter_when_training_on_the_cpu() -> None:
    cfg = make_cfg({"lm_width": 16384, "lm_depth": 256, "lm_heads": 4}, device="cpu")
    params = estimate_params(cfg.model, BYTE_VOCAB, cfg.video.max_frames, cfg.video.frame_size)
    with pytest.raises(ValueError) as err:
        check_fits_in_memory(cfg, limit=MemoryLimit(24 * GiB, "test"), processes=(1, ""), on_host=True)
    expected = (
        f"model states = parameters * 16 B (fp32 weights 4, grads 4, AdamW moments 8) = {params:,} * 16 B"
    )
    assert expected in str(err.value)
    assert str(err.value).endswith("lower model.*_width, model.*_depth or model.max_seq_len")


def test_model_and_activations_are_not_host_memory_when_training_on_a_gpu() -> None:
    cfg = make_cfg({"lm_width": 16384, "lm_depth": 256, "lm_heads": 4}, device="cuda")
    check_fits_in_memory(cfg, limit=MemoryLimit(24 * GiB, "test"), processes=(1, ""))


def test_gpu_check_counts_two_bytes_an_activation_under_bf16_and_four_in_fp32() -> None:
    cfg = shape_cfg("small_vlm_224", batch_size=64)  # 9.7 GiB under bf16, 18.6 GiB in fp32
    check_fits_on_gpu(cfg, total_bytes=16 * GiB, bf16=True, device="cuda:0")
    with pytest.raises(
        ValueError,
        match=r"^cuda:0 memory: .* > 90% of 16\.0 GiB \(total memory of cuda:0\): "
        r"ViT activations = .* \* 4 B = ",
    ):
        check_fits_on_gpu(cfg, total_bytes=16 * GiB, bf16=False, device="cuda:0")
    with pytest.raises(ValueError, match=r"ViT activations = .* \* 2 B = "):
        check_fits_on_gpu(shape_cfg("small_vlm_224", batch_size=256), total_bytes=16 * GiB, bf16=True)


def test_under_fsdp_a_rank_holds_its_share_of_the_model_states() -> None:
    """A 4.9 B-parameter LM: 72 GiB of states, refused whole on an 80 GiB GPU; over 8 FSDP ranks
    each holds 9 GiB of them, and a refusal shows the division."""
    cfg = make_cfg({"lm_width": 4096, "lm_depth": 24, "lm_heads": 32}, device="cuda")
    cfg.trainer.strategy = "fsdp"
    params = estimate_params(cfg.model, BYTE_VOCAB, cfg.video.max_frames, cfg.video.frame_size)
    with pytest.raises(ValueError, match=r"model states = parameters \* 16 B"):
        check_fits_on_gpu(cfg, total_bytes=80 * GiB, bf16=True)
    check_fits_on_gpu(cfg, total_bytes=80 * GiB, bf16=True, ranks=8)
    with pytest.raises(ValueError) as err:
        check_fits_on_gpu(cfg, total_bytes=8 * GiB, bf16=True, ranks=8)
    assert (
        "model states per rank = (parameters * 16 B (fp32 weights 4, grads 4, AdamW moments 8)) / 8 ranks "
        f"(trainer.strategy=fsdp) = ({params:,} * 16 B) / 8 = "
    ) in str(err.value)
    assert str(err.value).endswith("or add ranks")


def test_gpu_decoded_frames_count_the_prefetch_queue_on_the_device() -> None:
    cfg = KVideoConfig(
        video=VideoConfig(**SAMPLE, frame_size=2048, max_frames=8),
        decoder=DecoderConfig(name="decord_gpu"),
        trainer=TrainerConfig(batch_size=64, device="cuda"),
    )
    with pytest.raises(
        ValueError,
        match=r"decoded frames on the device = .* \(decoder\.prefetch \+ 1\) "
        r"batches = 64 \* 8 \* 2048\^2 \* 3 B \* \(2 \+ 1\) = 18\.0 GiB",
    ):
        check_fits_on_gpu(cfg, total_bytes=16 * GiB, bf16=True)


def test_slurm_sweep_points_are_checked_against_the_jobs_mem_gb_not_the_login_node() -> None:
    cfg = shape_cfg("small_vlm_224", device="cpu")  # 5.2 GiB
    slurm = {
        "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "tasks_per_node": 1,
        "gpus_per_node": 0,
    }
    check_fits_where_it_runs(cfg, {**slurm, "mem_gb": 8})
    check_fits_where_it_runs(cfg, {**slurm, "mem_gb": None})  # unset: the job checks on its node
    with pytest.raises(ValueError, match=r"> 90% of 4\.0 GiB \(hydra\.launcher\.mem_gb=4\)"):
        check_fits_where_it_runs(cfg, {**slurm, "mem_gb": 4})
    with pytest.raises(ValueError, match=r"\* 2 processes, hydra\.launcher\.tasks_per_node"):
        check_fits_where_it_runs(cfg, {**slurm, "mem_gb": 8, "tasks_per_node": 2})


# ----------------------------------------------------------------------------- machine facts


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_machine(tmp_path: Path, *, mem_total_kib: int, self_cgroup: str) -> dict[str, Path]:
    return {
        "meminfo": write(tmp_path / "meminfo", f"MemTotal:       {mem_total_kib} kB\nMemAvailable:   1 kB\n"),
        "self_cgroup": write(tmp_path / "self_cgroup", self_cgroup),
        "cgroup_root": tmp_path / "cgroup",
    }


def test_memory_limit_is_mem_total_not_mem_available_without_cgroup_limits(tmp_path: Path) -> None:
    paths = fake_machine(tmp_path, mem_total_kib=16 * 2**20, self_cgroup="0::/user.slice\n")
    write(tmp_path / "cgroup/user.slice/memory.max", "max\n")
    limit = memory_limit(**paths)
    assert limit is not None
    assert limit == MemoryLimit(16 * GiB, f"MemTotal in {paths['meminfo']}")
    assert available_memory_bytes(**paths) == 16 * GiB


def test_cgroup_v2_limit_of_an_ancestor_applies_to_its_children(tmp_path: Path) -> None:
    paths = fake_machine(tmp_path, mem_total_kib=64 * 2**20, self_cgroup="0::/job_7/step_0/task_0\n")
    write(tmp_path / "cgroup/job_7/memory.max", f"{12 * GiB}\n")
    write(tmp_path / "cgroup/job_7/step_0/task_0/memory.max", "max\n")
    limit = memory_limit(**paths)
    assert limit is not None
    assert limit.bytes == 12 * GiB
    assert limit.source == f"cgroup limit {tmp_path / 'cgroup/job_7/memory.max'}"


def _limit(paths: dict[str, Any]) -> MemoryLimit:
    limit = memory_limit(**paths)
    assert limit is not None
    return limit


def test_cgroup_v1_unlimited_is_ignored_and_a_real_limit_wins(tmp_path: Path) -> None:
    v1 = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n"
    paths = fake_machine(tmp_path, mem_total_kib=32 * 2**20, self_cgroup=v1)
    write(tmp_path / "cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    assert _limit(paths).bytes == 32 * GiB
    write(tmp_path / "cgroup/memory/docker/abc/memory.limit_in_bytes", f"{6 * GiB}\n")
    assert _limit(paths).bytes == 6 * GiB


def test_a_container_that_mounts_only_its_own_cgroup_reads_the_mounts_limit(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path, but the container sees its cgroup at the root.
    paths = fake_machine(tmp_path, mem_total_kib=64 * 2**20, self_cgroup="0::/kubepods/pod1/ctr\n")
    write(tmp_path / "cgroup/memory.max", f"{20 * GiB}\n")
    assert _limit(paths).bytes == 20 * GiB


def test_no_proc_files_means_no_limit_known(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert memory_limit(meminfo=missing, cgroup_root=tmp_path, self_cgroup=missing) is None


def test_this_machine_has_a_memory_limit_no_larger_than_mem_total() -> None:
    limit, total = memory_limit(), meminfo_total()
    assert limit is not None and total is not None and 0 < limit.bytes <= total
    assert available_memory_bytes() == limit.bytes


def test_processes_per_node_come_from_torchrun_or_the_srun_step() -> None:
    assert processes_per_node({}) == (1, "")
    assert processes_per_node({"LOCAL_WORLD_SIZE": "4"}) == (4, "LOCAL_WORLD_SIZE")
    step = {"SLURM_PROCID": "0", "SLURM_STEP_TASKS_PER_NODE": "4(x2),3"}
    assert processes_per_node(step) == (3, "SLURM_STEP_TASKS_PER_NODE")
    # A plain `python train.py` inside an allocation is one process.
    assert processes_per_node({"SLURM_STEP_TASKS_PER_NODE": "4"}) == (1, "")


def test_gpu_visible_reads_device_nodes_and_cuda_visible_devices(tmp_path: Path) -> None:
    assert not gpu_visible({}, dev=tmp_path)
    write(tmp_path / "nvidia0", "")
    assert gpu_visible({}, dev=tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, dev=tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}, dev=tmp_path)
