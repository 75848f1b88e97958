"""Command-line keys checked against the schema before Hydra composes them
(``kvideo.config.keys`` says why)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def refuse_unknown_overrides(argv: Sequence[str], config_dir: Path) -> None:
    """Exit 2 with one line for a command-line key the schema lacks (``video.fsp=2``,
    ``+video.fsp=2``, ``trainer.max_step=10``), naming the closest real key, before Hydra answers
    the first with "use +video.fsp=2" (which would then be dropped without a word). Group
    choices (``model=pretrained``, ``video/dataset=manifest``), ``hydra.*`` and deletions are
    Hydra's to check."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from kvideo.config import KVideoConfig
    from kvideo.config.keys import schema_keys, unknown_key_message

    args, _ = get_args_parser().parse_known_args(list(argv))
    try:
        overrides = OverridesParser.create().parse_overrides(list(args.overrides))
    except HydraException:
        return  # a grammar error: Hydra's own message names it
    known = set(schema_keys(KVideoConfig))
    for override in overrides:
        key = override.key_or_group
        if override.is_delete() or override.is_hydra_override() or "/" in key or "@" in key:
            continue
        if "." not in key and (config_dir / key).is_dir():
            continue  # a config group choice
        if key not in known:
            print(f"kvideo: invalid config: {unknown_key_message(key, KVideoConfig)}", file=sys.stderr)
            sys.exit(2)
