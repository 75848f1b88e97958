"""Pre-flight for Hydra's ``--cfg`` path, which prints a config without calling the task.

``python train.py --cfg job video.fps=-1`` would otherwise print a config that the run refuses:
Hydra composes and prints it, but runs neither the schema's ``__post_init__`` rules nor any
callback. ``preflight_printed_config`` composes the same overrides first (with Hydra's own
argument parser, so every flag means what it means to Hydra), checks them and runs the
pre-flight step, and exits 2 with the one-line reason when the run would be refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

SHOWN_PARTS = ("job", "all")  # --cfg hydra shows Hydra's own node: nothing of kvideo's to check


def preflight_printed_config(argv: Sequence[str], config_dir: Path) -> None:
    """For ``--cfg job`` / ``--cfg all`` of a single run (a multirun's points are checked by
    ``CheckSweepCallback`` before it launches); nothing for any other command line."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(argv))
    if args.cfg not in SHOWN_PARTS or args.multirun or args.help or args.hydra_help:
        return
    from kvideo.config.compose import compose_config
    from kvideo.preflight import checked

    composed = compose_config(args.overrides, config_dir)
    try:
        checked(composed)
    except ValueError as e:
        print(f"kvideo: invalid config: {e}", file=sys.stderr)
        sys.exit(2)
