"""The ConfigStore registration of the schemas and the resolvers the config tree uses.

Here, in the package and not in ``__main__``: submitit pickles configs into jobs that must be
able to resolve them."""

from __future__ import annotations

from collections.abc import Callable

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from kvideo.config.describe import keys_help
from kvideo.config.evaluation import EVAL_SCHEMA_NAME, EvalConfig
from kvideo.config.root import KVideoConfig
from kvideo.config.slurm_job import cpus_per_task, mem_gb_per_node, tasks_per_node

SCHEMA_NAME = "kvideo_schema"


def register_configs() -> None:
    """Register the schemas, so ``conf/config.yaml`` and ``conf/eval.yaml`` can list them first
    in their defaults, and the ``kvideo.*`` resolvers of ``conf/hydra/launcher`` and
    ``conf/hydra/help``."""
    cs = ConfigStore.instance()
    cs.store(name=SCHEMA_NAME, node=KVideoConfig)
    cs.store(name=EVAL_SCHEMA_NAME, node=EvalConfig)
    resolvers: dict[str, Callable[..., int | str]] = {
        "kvideo.tasks_per_node": tasks_per_node,
        "kvideo.cpus_per_task": cpus_per_task,
        "kvideo.mem_gb_per_node": mem_gb_per_node,
        "kvideo.keys_help": keys_help,  # conf/hydra/help/kvideo.yaml
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
