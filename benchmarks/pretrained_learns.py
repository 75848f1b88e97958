"""Does ``model=pretrained`` learn? A tiny random-initialised Qwen2.5-VL on the embedded corpus.

The folder is made as a user's is (``tests/helpers/pretrained_vlms.py``: transformers' own
``Qwen2_5_VLConfig``, ``save_pretrained`` of the model, its tokenizer and image processor): a
2-layer LM 128 wide, a 2-layer tower 64 wide, 14 px patches merged 2 x 2 over 2-frame temporal
patches. Then ``python train.py model=pretrained model.path=<it> ...`` as a user would run it,
nothing frozen (random weights have nothing to keep), 112 px frames (4 x 4 LM tokens per
2-frame group), at ``video.max_frames=8`` and at ``video.max_frames=1``, with ``hf_vlm``'s
recipe (``benchmarks.hf_vlm_learns`` says why: ``random_segment``, lr 5e-4, 2400 steps):

* at 8 frames colour must reach >= 0.95 and direction >= 0.8;
* at 1 frame direction must stay at chance (0.25): one frame (repeated into one temporal patch,
  as Qwen's processor does) shows no motion.

Each run must finish within 20 minutes of wall time on 2 CPU cores. Writes
``benchmarks/results/pretrained_learns.json``.

``python -m benchmarks.pretrained_learns [--max-steps N] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks import common
from benchmarks.hf_vlm_learns import LR, MAX_STEPS, REPO, evaluate, train_frame_counts

WIDTH = 128
FRAME_SIZE = 112


def model_overrides(folder: Path) -> list[str]:
    """The tiny VLM, every part at trainer.lr."""
    return [
        "model=pretrained",
        f"model.path={folder}",
        f"video.frame_size={FRAME_SIZE}",
        "model.freeze=[]",
        "model.lm_lr=0",
        "model.projector_lr=0",
        "model.vision_lr=0",
        "model.max_text_len=48",
        "video/sampling=random_segment",
        f"trainer.lr={LR}",
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.device=cpu",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-steps", type=int, default=0, help=f"trainer.max_steps (default {MAX_STEPS})")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 1], help="video.max_frames of each run")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.helpers.pretrained_vlms import save_tiny_qwen_vl

    with tempfile.TemporaryDirectory(prefix="kvideo_pretrained_learns_") as tmp:
        root = Path(tmp)
        folder = save_tiny_qwen_vl(root / "qwen2_5_vl", width=WIDTH)
        runs = train_frame_counts(model_overrides(folder), args.frames, root, args.max_steps)
    checks = evaluate(runs) if set(runs) == {"8", "1"} else {}
    result = {
        "machine": common.machine(),
        "width": WIDTH,
        "frame_size": FRAME_SIZE,
        "runs": runs,
        "checks": checks,
    }
    path = common.write_result("pretrained_learns", result, args.out)
    print(json.dumps(checks, indent=2))
    print(f"-> {path}")
    return 0 if checks and all(c["pass"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
