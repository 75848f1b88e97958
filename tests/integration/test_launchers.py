"""Launcher configs resolve to the sbatch parameters a SLURM site expects.

The real cluster path is covered by tests/cluster/test_slurm_launch.py; here the launcher is
instantiated from the composed config and submitit's executor is replaced by a
recorder, to check exactly what would be sent to sbatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kvideo.config import register_configs
from tests.helpers.paths import CONF_DIR

register_configs()

# What a site sets in the environment for the slurm launcher (conf/hydra/launcher/slurm.yaml).
SITE_VARIABLES = (
    "SBATCH_PARTITION",
    "SBATCH_ACCOUNT",
    "SBATCH_QOS",
    "KVIDEO_SLURM_TIMEOUT_MIN",
    "KVIDEO_SLURM_NODES",
    "KVIDEO_SLURM_GPUS_PER_NODE",
    "KVIDEO_SLURM_CPUS_PER_TASK",
    "KVIDEO_SLURM_MEM_GB",
)


def launcher_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return cfg


class RecordingExecutor:
    """Stands in for submitit.AutoExecutor: records what the launcher configures."""

    instances: ClassVar[list[RecordingExecutor]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs
        self.parameters: dict[str, Any] = {}
        RecordingExecutor.instances.append(self)

    def update_parameters(self, **kwargs: Any) -> None:
        self.parameters.update(kwargs)

    def map_array(self, fn, *args):
        class Done:
            def results(self):
                return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]

        return [Done() for _ in args[0]]


def launch_recorded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, overrides: list[str]
) -> RecordingExecutor:
    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", RecordingExecutor)
    cfg = launcher_cfg([*overrides, f"hydra.sweep.dir={tmp_path}"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    launcher.launch([["video.max_frames=4"]], initial_job_idx=0)
    return RecordingExecutor.instances[-1]


def test_slurm_defaults_and_one_task_without_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in SITE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    executor = launch_recorded(monkeypatch, tmp_path, ["hydra/launcher=slurm"])
    assert executor.init_kwargs["cluster"] == "slurm"
    assert executor.init_kwargs["slurm_max_num_timeout"] == 20
    params = executor.parameters
    assert params["nodes"] == 1
    assert params["tasks_per_node"] == 1
    assert params["gpus_per_node"] == 0
    assert params["cpus_per_task"] == 3  # training + trainer.num_workers (2) decode workers
    assert params["mem_gb"] == 8  # one CPU-only task
    assert params["timeout_min"] == 240
    assert params["slurm_partition"] is None
    assert params["slurm_signal_delay_s"] == 120


def test_slurm_defaults_follow_the_gpus_nodes_and_decode_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in SITE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    executor = launch_recorded(
        monkeypatch,
        tmp_path,
        [
            "hydra/launcher=slurm",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.nodes=2",
            "trainer.num_workers=6",
        ],
    )
    params = executor.parameters
    assert (params["nodes"], params["tasks_per_node"]) == (2, 4)  # 8 ranks
    assert params["cpus_per_task"] == 7  # each rank: training + 6 decode workers
    assert params["mem_gb"] == 4 * 32  # per node: 32 GiB per GPU task


def test_slurm_site_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    monkeypatch.setenv("SBATCH_ACCOUNT", "kempner_lab")
    monkeypatch.setenv("SBATCH_QOS", "high")
    monkeypatch.setenv("KVIDEO_SLURM_GPUS_PER_NODE", "4")
    monkeypatch.setenv("KVIDEO_SLURM_TIMEOUT_MIN", "600")
    monkeypatch.setenv("KVIDEO_SLURM_NODES", "2")
    monkeypatch.setenv("KVIDEO_SLURM_CPUS_PER_TASK", "9")
    monkeypatch.setenv("KVIDEO_SLURM_MEM_GB", "500")
    executor = launch_recorded(monkeypatch, tmp_path, ["hydra/launcher=slurm"])
    params = executor.parameters
    assert params["slurm_partition"] == "gpu"
    assert params["slurm_account"] == "kempner_lab"
    assert params["slurm_qos"] == "high"
    assert params["gpus_per_node"] == 4
    assert params["tasks_per_node"] == 4  # one task per GPU
    assert params["timeout_min"] == 600
    assert (params["nodes"], params["cpus_per_task"], params["mem_gb"]) == (2, 9, 500)


def test_slurm_overrides_and_pass_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    executor = launch_recorded(
        monkeypatch,
        tmp_path,
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=debug",
            "hydra.launcher.gpus_per_node=8",
            "hydra.launcher.setup=[module load cuda]",
            "+hydra.launcher.additional_parameters.requeue=true",
        ],
    )
    params = executor.parameters
    assert params["slurm_partition"] == "debug"
    assert params["tasks_per_node"] == 8
    assert params["slurm_setup"] == ["module load cuda"]
    assert params["slurm_additional_parameters"] == {"requeue": True}


@pytest.mark.parametrize("name", ["submitit_local", "joblib", "basic"])
def test_one_machine_launchers_compose(name: str) -> None:
    cfg = launcher_cfg([f"hydra/launcher={name}"])
    assert OmegaConf.select(cfg, "hydra.launcher._target_")
