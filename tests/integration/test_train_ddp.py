"""DDP: two gloo processes take one optimizer step on different data and must end with
identical weights, equal to a step on the averaged gradient. Plus launch-env parsing."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import cast

import pytest
import torch

from kvideo.data.settings import ClipSettings
from kvideo.train.distributed import LaunchEnv, detect_launch, first_host
from tests.helpers.cli import run_train
from tests.helpers.configs import tiny_config, tiny_model
from tests.helpers.ranks import run_ranks

pytestmark = pytest.mark.slow  # trains a model

WORLD = 2
FRAMES, SIZE, TEXT = 2, 32, 12


TINY_MODEL = tiny_model(patch_size=16, lm_depth=1, max_text_len=TEXT)


def _rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s data: different on each rank, same shape and token count (so the DDP
    mean of per-rank mean losses is the mean over the union)."""
    g = torch.Generator().manual_seed(rank)
    frames = torch.randn(3, FRAMES, 3, SIZE, SIZE, generator=g)
    frame_mask = torch.ones(3, FRAMES, dtype=torch.bool)
    ids = torch.randint(0, 50, (3, TEXT), generator=g)
    labels = ids.clone()
    labels[:, :2] = -100
    return frames, frame_mask, ids, labels


def _worker(rank: int, out_dir: str) -> None:
    import torch.distributed as dist

    from kvideo.model import build_model
    from kvideo.train.distributed import all_gather_objects, cleanup, init_distributed, wrap_model
    from kvideo.train.loop import param_groups

    env = init_distributed("cpu")
    try:
        assert (env.rank, env.world_size, env.backend, env.is_main) == (rank, WORLD, "gloo", rank == 0)
        # Deliberately different init per rank: DDP must broadcast rank 0's weights.
        torch.manual_seed(100 + rank)
        model = build_model(TINY_MODEL, vocab_size=50, max_frames=FRAMES, frame_size=SIZE)
        ddp = wrap_model(model, env)
        optim = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-2)

        loss = ddp(*_rank_batch(rank))["loss"]
        loss.backward()
        grads = [cast(torch.Tensor, p.grad).detach().clone() for p in model.parameters()]
        optim.step()

        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = all_gather_objects(flat, env)
        grad_flat = torch.cat([gr.flatten() for gr in grads])
        gathered_grads = all_gather_objects(grad_flat, env)
        local_losses = all_gather_objects(float(loss.detach()), env)
        if rank == 0:
            Path(out_dir, "result.json").write_text(
                json.dumps(
                    {
                        "max_param_diff": float((gathered[0] - gathered[1]).abs().max()),
                        "max_grad_diff": float((gathered_grads[0] - gathered_grads[1]).abs().max()),
                        "losses": local_losses,
                        "checksum": float(flat.double().sum()),
                    }
                )
            )
            torch.save(flat, Path(out_dir, "params_after.pt"))
        dist.barrier()
        del ddp  # before the process group: its reducer must not be the group's last owner
        gc.collect()
    finally:
        cleanup(env)


def _reference_step() -> torch.Tensor:
    """Single process: rank 0's init, gradient averaged over both ranks' batches, one step."""
    from kvideo.model import build_model
    from kvideo.train.loop import param_groups

    torch.manual_seed(100)
    model = build_model(TINY_MODEL, vocab_size=50, max_frames=FRAMES, frame_size=SIZE)
    optim = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-2)
    for rank in range(WORLD):
        loss = model(*_rank_batch(rank))["loss"] / WORLD
        loss.backward()
    optim.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    # fork: the children inherit the imported torch instead of paying for the import twice more.
    run_ranks(_worker, WORLD, str(tmp_path))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["losses"][0] != result["losses"][1]  # the ranks really saw different data
    assert result["max_grad_diff"] == 0.0  # DDP all-reduced the gradients
    assert result["max_param_diff"] == 0.0
    ddp_params = torch.load(tmp_path / "params_after.pt")
    torch.testing.assert_close(ddp_params, _reference_step(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- launch env


def test_detect_single_process() -> None:
    assert detect_launch({}) == LaunchEnv()
    # A SLURM allocation with one task (or a shell inside `salloc -n 4`) is a single process.
    assert detect_launch({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "5"}).world_size == 1
    in_salloc = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1"}
    assert detect_launch(in_salloc).world_size == 1
    # What an `sbatch -n 4` batch script sees (read off the local cluster): no step, one process.
    in_sbatch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "7"}
    assert detect_launch(in_sbatch_script).world_size == 1


def test_detect_torchrun_wins_over_slurm() -> None:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "h1",
        "MASTER_PORT": "1234",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "2",
    }
    assert detect_launch(env) == LaunchEnv(3, 1, 4, "h1", 1234, "torchrun")


def test_detect_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")  # no scontrol: exercise the parser
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[07-08,11],cpu3",
    }
    launch = detect_launch(env)
    assert (launch.rank, launch.local_rank, launch.world_size, launch.source) == (5, 1, 8, "slurm")
    assert launch.master_addr == "gpu07"
    assert launch.master_port == 12000 + 4242 % 20000
    # Explicit MASTER_* (set by a wrapper) are respected.
    launch = detect_launch({**env, "MASTER_ADDR": "head", "MASTER_PORT": "999"})
    assert (launch.master_addr, launch.master_port) == ("head", 999)


def test_detect_slurm_two_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    # Task 1 of `srun -N2 --ntasks-per-node=1` in job 6, read off the local 2-node cluster.
    env = {
        "SLURM_JOB_ID": "6",
        "SLURM_JOB_NODELIST": "kvnode[1-2]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_LOCALID": "0",
        "SLURM_NNODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
        "SLURM_STEP_NODELIST": "kvnode[1-2]",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_NUM_TASKS": "2",
    }
    assert detect_launch(env) == LaunchEnv(1, 0, 2, "kvnode1", 12006, "slurm")
    # A step on part of the allocation: its master is the step's first node, where task 0 runs.
    subset = {**env, "SLURM_JOB_NODELIST": "kvnode[1-3]", "SLURM_STEP_NODELIST": "kvnode[2-3]"}
    assert detect_launch(subset).master_addr == "kvnode2"


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("node1", "node1"),
        ("a,b", "a"),
        ("node[01-04,07]", "node01"),
        ("gpu[3,5]-ib", "gpu3-ib"),
        ("x[2-3],y[1-2]", "x2"),
    ],
)
def test_first_host(monkeypatch: pytest.MonkeyPatch, nodelist: str, first: str) -> None:
    monkeypatch.setenv("PATH", "")
    assert first_host(nodelist) == first


def test_cuda_requested_without_cuda_names_the_field() -> None:
    from kvideo.train.distributed import resolve_device

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match=r"trainer\.device=cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_nccl_without_a_gpu_is_refused_with_the_fix() -> None:
    from kvideo.train.distributed import resolve_backend

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError) as info:
        resolve_backend("nccl", torch.device("cpu"))
    assert str(info.value) == (
        "trainer.backend=nccl needs the model on a GPU, and this machine has no CUDA GPU "
        "(torch.cuda.is_available() is False): use trainer.backend=gloo (or auto) with trainer.device=cpu"
    )
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == resolve_backend("gloo", cpu) == "gloo"


def test_cli_refuses_nccl_without_a_gpu_in_one_line_before_training(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    result = run_train("trainer.backend=nccl", "trainer=debug", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kvideo: trainer.backend=nccl needs the model on a GPU")
    assert "use trainer.backend=gloo (or auto) with trainer.device=cpu" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------- train() x 2


def _train_worker(rank: int, data_root: str, run_dir: str, out_dir: str) -> None:
    from kvideo.train import train

    cfg = tiny_config(Path(data_root), max_steps=6, ckpt_every=3, val_every=3, val_max_batches=0)
    cfg.video.val_max_samples = 7  # odd: rank 1's last validation sample is a padding duplicate
    final = train(cfg, run_dir)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(final))


def test_train_with_two_ranks(tmp_path: Path) -> None:
    """The whole loop under gloo DDP: collectives line up (logging, skip counts, validation,
    checkpoints), rank 0 alone writes, and every rank returns the same all-reduced metrics."""
    from kvideo.data.loader import build_dataset
    from kvideo.data.tokenizer import build_tokenizer
    from kvideo.train.metrics import read_jsonl

    data_root = tmp_path / "data"
    cfg = tiny_config(data_root)
    rows = build_dataset(
        ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data)
    ).rows  # generate once
    Path(rows[2].path).write_bytes(b"")
    run_dir = tmp_path / "run"
    run_ranks(_train_worker, WORLD, str(data_root), str(run_dir), str(tmp_path))
    finals = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert finals[0]["status"] == finals[1]["status"] == "completed"
    assert finals[0]["world_size"] == 2
    for key in ("val_loss", "acc_color", "acc_shape", "acc_direction", "skipped", "val_clips"):
        assert finals[0][key] == finals[1][key], key
    # 8 clips per step over 2 ranks: 3 steps per epoch, 2 epochs, the empty file met twice
    # (by whichever rank drew it) and counted over both ranks.
    assert finals[0]["skipped"] == {"empty": 2}
    assert finals[0]["val_clips"] == 7  # every validation clip once, the padding duplicate not counted
    assert [r["path"] for r in read_jsonl(run_dir / "skipped.jsonl")] == [rows[2].path]
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "split" not in r]
    assert steps == list(range(1, 7))
    assert (run_dir / "final.json").exists() and (run_dir / "checkpoints" / "last.pt").exists()
