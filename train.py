"""Train a video-language model: ``python train.py [overrides]`` (Hydra CLI).

Kept thin: compose (Hydra) -> validate (``to_validated``) -> ``kvideo.train.train``.
Heavy imports (torch, decord) happen after validation so ``--cfg job`` stays fast and a
bad config fails before any work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kvideo.config import register_configs, to_validated

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        run_cfg = to_validated(cfg)
    except ValueError as e:
        print(f"kvideo: invalid config: {e}", file=sys.stderr)
        sys.exit(2)
    from kvideo.train import train

    result = train(run_cfg, run_dir=Path(HydraConfig.get().runtime.output_dir))
    # Returned for sweepers that optimise a metric (e.g. Optuna): lower is better.
    return result.get("val_loss") if isinstance(result, dict) else None


if __name__ == "__main__":
    main()
