"""``python -m kvideo.assemble --vision-path TOWER --lm-path LM --out DIR``: a LLaVA-OneVision
assembled from a pretrained tower and LM with a fresh projector (``kvideo.model.assemble``), to
train with ``model=pretrained model.path=DIR``. Its exports load with transformers alone, which
``model=hf_vlm``'s cannot (kvideo's projector is no transformers class).

``TOWER`` and ``LM`` are what ``model.vision_path`` and ``model.lm_path`` take: a local folder or
a hub id already in the cache (nothing is downloaded). Prints what was assembled and the command
that trains it; a part the layout cannot hold is one line on stderr and exit 2.
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
        prog="python -m kvideo.assemble", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument("--vision-path", required=True, help="the vision tower (as model.vision_path)")
    parser.add_argument(
        "--lm-path", required=True, help="the causal LM, with a chat template (as model.lm_path)"
    )
    parser.add_argument("--out", required=True, help="a new folder for the assembled model")
    parser.add_argument(
        "--vision-feature-layer",
        type=int,
        default=-2,
        help="the tower's hidden state the projector reads (as model.vision_feature_layer; default -2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialises the projector (default 0)")
    args = parser.parse_args(argv)
    from kvideo.hf_folders import resolve_model_folder
    from kvideo.model.assemble import assemble_llava_onevision

    try:
        info = assemble_llava_onevision(
            resolve_model_folder("--vision-path", args.vision_path),
            resolve_model_folder("--lm-path", args.lm_path),
            Path(args.out),
            feature_layer=args.vision_feature_layer,
            seed=args.seed,
        )
    except (ValueError, OSError) as e:
        print(f"kvideo.assemble: {one_line(e)}", file=sys.stderr)
        return 2
    info["train"] = (
        f"python train.py model=pretrained model.path={args.out} video.frame_size={info['frame_size']}"
    )
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
