"""Evaluate a trained run: ``python eval.py ckpt_path=RUN_DIR_OR_CHECKPOINT [overrides]`` (Hydra CLI).

Kept thin, like ``train.py``: compose (``conf/eval.yaml``) -> the run's own config with the
command line's keys changed (``kvideo.launch.eval_overrides``) -> restore the checkpoint ->
``kvideo.inference.evaluation.evaluate_trained`` -> ``eval.json`` and ``predictions.jsonl`` in this
job's run dir. ``-m ckpt_path=a,b`` evaluates several checkpoints, one job each.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kvideo.config import register_configs
from kvideo.errors import one_line

register_configs()
CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from kvideo.config.evaluation import check_eval_keys
    from kvideo.inference import load_trained
    from kvideo.inference.evaluation import evaluate_trained
    from kvideo.launch.eval_overrides import run_config_updates
    from kvideo.train.guards import RunFailed

    if OmegaConf.is_missing(cfg, "ckpt_path"):
        print(
            "kvideo eval: ckpt_path is required: python eval.py ckpt_path=RUN_DIR_OR_CHECKPOINT",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        check_eval_keys(cfg.split, cfg.max_new_tokens, cfg.batch_size)
    except ValueError as e:
        print(f"kvideo eval: invalid config: {e}", file=sys.stderr)
        sys.exit(2)
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    try:
        updates = run_config_updates(cfg, hydra_cfg.overrides.task, CONF_DIR)
        trained = load_trained(cfg.ckpt_path, updates=updates, device=cfg.device or None)
        result = evaluate_trained(
            trained,
            split=cfg.split,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            predictions=out / "predictions.jsonl",
        )
    except (ValueError, OSError, RunFailed, RuntimeError, KeyError) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(
            f"kvideo eval: {one_line(e)} (HYDRA_FULL_ERROR=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(2)
    result["overrides"] = updates
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    shown = {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}
    print(f"eval of {trained.checkpoint} (step {trained.step}) on {cfg.split}: {shown} -> {out}")
    return result.get("val_loss")


if __name__ == "__main__":
    main()
