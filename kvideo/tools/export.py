"""``python -m kvideo.export CKPT_OR_RUN_DIR [--out DIR] [--merge-lora]``: a trained run in Hugging
Face formats.

What goes where is ``kvideo.model.export``'s docstring; the default ``DIR`` is
``<run_dir>/export``, where a completed run already exported its last step. Prints the
``export.json`` written; a bad checkpoint or run dir is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kvideo.errors import one_line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvideo.export", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument(
        "ckpt_path", help="a run dir (its newest checkpoint) or a checkpoint file (as eval.py's ckpt_path)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: <run_dir>/export)")
    parser.add_argument(
        "--merge-lora",
        action="store_true",
        help="merge LoRA adapters into the weights (one standalone model) instead of writing the "
        "adapter and a reference to its base",
    )
    args = parser.parse_args(argv)
    from kvideo.inference import load_trained
    from kvideo.train.guards import RunFailed
    from kvideo.train.restore import export_trained

    try:
        trained = load_trained(args.ckpt_path, device="cpu")
        out = Path(args.out) if args.out else trained.run_dir / "export"
        info = export_trained(trained, out, merge_lora=args.merge_lora)
    except (ValueError, OSError, RunFailed, RuntimeError) as e:
        print(f"kvideo.export: {one_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
