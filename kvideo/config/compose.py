"""Hydra composition outside ``@hydra.main``, and where the config tree is: one place for both.

``train.py`` composes through ``@hydra.main`` with the ``conf/`` beside it. Everything else
that needs the same config (``kvideo-validate``, benchmarks, tests) calls ``compose_config``,
which must also work when kvideo runs as an installed package, where no ``conf/`` sits at a
fixed place relative to the code. ``find_config_dir`` looks, in order:

1. ``config_dir`` (the tools' ``--config-dir``), when given;
2. ``$KVIDEO_CONFIG_DIR``, when set;
3. ``./conf``, when it holds ``config.yaml`` (run from a checkout or a copy of its ``conf/``);
4. the repository's ``conf/`` next to the package (an editable install, a source checkout).

An explicit choice (1 or 2) without a ``config.yaml`` is an error, not a reason to look further:
silently composing another tree than the one named would check the wrong experiment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

CONFIG_NAME = "config"  # conf/config.yaml, the primary config train.py composes
CONFIG_DIR_ENV = "KVIDEO_CONFIG_DIR"
# Where conf/ is in a checkout (and so in an editable install): beside the kvideo package.
REPO_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigDirNotFound(FileNotFoundError):
    """No config tree where one was named or looked for; the message says where and the fix."""


def find_config_dir(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``config.yaml`` (absolute), by the lookup order in the module doc."""
    primary = f"{CONFIG_NAME}.yaml"
    fix = f"pass --config-dir DIR (or set {CONFIG_DIR_ENV}=DIR) with DIR the folder holding {primary}"
    explicit = [("--config-dir", config_dir), (f"${CONFIG_DIR_ENV}", os.environ.get(CONFIG_DIR_ENV) or None)]
    for source, value in explicit:
        if value is not None:
            path = Path(value).expanduser().resolve()
            if (path / primary).is_file():
                return path
            raise ConfigDirNotFound(f"{source} {path} holds no {primary}; {fix}")
    tried = [("./conf", Path.cwd() / "conf"), ("the repository's conf/", REPO_CONFIG_DIR)]
    for _, path in tried:
        if (path / primary).is_file():
            return path.resolve()
    places = ", ".join(f"{name} ({path})" for name, path in tried)
    raise ConfigDirNotFound(f"no kvideo config tree found: tried {places}; {fix}")


def compose_config(
    overrides: Sequence[str] = (), config_dir: str | os.PathLike[str] | None = None
) -> DictConfig:
    """The composed (not yet checked) config, exactly as ``train.py`` composes it from the same
    tree and overrides; ``kvideo.config.config_from`` turns it into a ``KVideoConfig``."""
    from hydra import compose, initialize_config_dir

    from kvideo.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(find_config_dir(config_dir)), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))
