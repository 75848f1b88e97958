"""``python -m kvideo.caption CKPT_OR_RUN_DIR VIDEO [VIDEO ...]``: caption videos with a trained run.

Each video goes through the run's own sampling, decoding and preprocessing (its ``config.yaml``),
then greedy decoding after the prompt (for a run trained on ``video/dataset=conversations``, the
prompt is asked as the user's turn holding the video, the layout that run learned). One JSON line
per video on stdout::

    {"video": "clip.mp4", "caption": "a red circle moves left", "frames": 8, "times": [0.0, ...]}

A video that cannot be decoded gets ``{"video": ..., "error": "<reason>"}`` and the command
exits 1 after the others; a bad checkpoint or run dir is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from kvideo.errors import one_line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kvideo.caption", description=__doc__.split("\n")[0])
    parser.add_argument(
        "ckpt_path", help="a run dir (its newest checkpoint) or a checkpoint file (as eval.py's ckpt_path)"
    )
    parser.add_argument("videos", nargs="+", help="video files")
    parser.add_argument("--prompt", default=None, help="the prompt (default: the run's video.prompt)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="caption length cap (default 32)")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or auto (default: the run's trainer.device)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="videos per forward (default 8)")
    return parser.parse_args(argv)


# What a conversation-trained run is asked when neither --prompt nor the run's video.prompt says.
DEFAULT_QUESTION = "Describe the video."


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.max_new_tokens < 1 or args.batch_size < 1:
        print("kvideo.caption: --max-new-tokens and --batch-size must be positive", file=sys.stderr)
        return 2
    from kvideo.config.checks import require_caption_room
    from kvideo.data.clip_dataset import VideoClipDataset
    from kvideo.data.conversation import check_turns
    from kvideo.data.loader import collate, to_device
    from kvideo.data.rows import ClipRow, Turn
    from kvideo.data.settings import ClipSettings
    from kvideo.data.tokenizer import caption_turns
    from kvideo.inference import load_trained
    from kvideo.train.guards import RunFailed
    from kvideo.train.restore import autocast_for

    try:
        trained = load_trained(args.ckpt_path, device=args.device)
        cfg = trained.cfg
        prompt = cfg.video.prompt if args.prompt is None else args.prompt
        field = "video.prompt" if args.prompt is None else "--prompt"
        context = len(trained.tokenizer.context_ids(prompt))
        require_caption_room(context, cfg.model.max_text_len, trained.tokenizer.name, field)
    except (ValueError, OSError, RunFailed, RuntimeError) as e:
        print(f"kvideo.caption: {one_line(e)}", file=sys.stderr)
        return 2
    # A run trained on conversations learned answers after a user turn holding the video: ask the
    # prompt as that turn (the assistant's text is a stand-in; generation starts where it would).
    # A released VLM's captions are one-turn conversations (``encode_caption``): the same turn.
    turns: tuple[Turn, ...] = ()
    if cfg.video.dataset_type == "conversations":
        turns = check_turns([Turn("user", prompt or DEFAULT_QUESTION), Turn("assistant", "-")])
    elif trained.tokenizer.captions_as_conversations:
        turns = caption_turns(prompt, "-")
    rows = [ClipRow(path=os.path.abspath(v), caption="", clip_id=v, turns=turns) for v in args.videos]
    dataset = VideoClipDataset(rows, ClipSettings.of(cfg), trained.tokenizer)
    statistics = dataset.settings.statistics
    autocast = autocast_for(trained)
    failed = 0
    for start in range(0, len(rows), args.batch_size):
        samples = [dataset[i] for i in range(start, min(start + args.batch_size, len(rows)))]
        batch = to_device(collate(samples), trained.device, statistics)
        captions = trained.spec.generate(
            trained.model,
            batch,
            trained.tokenizer,
            prompt=prompt,
            max_new_tokens=args.max_new_tokens,
            autocast=autocast,
        )
        for sample, caption in zip(samples, captions, strict=True):
            video = args.videos[sample["index"]]
            if sample["skip_reason"]:
                failed += 1
                print(json.dumps({"video": video, "error": sample["skip_reason"]}), flush=True)
                continue
            valid = sample["frame_mask"]
            times = [round(float(t), 3) for t in sample["frame_times"][valid]]
            print(
                json.dumps({"video": video, "caption": caption, "frames": len(times), "times": times}),
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
