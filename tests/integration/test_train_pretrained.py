"""``model=pretrained``: a released VLM (tiny random Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision,
LLaVA-NeXT-Video, SmolVLM2 and InternVL3, built from transformers' own config classes) trains through the
real CLI, captions and evaluates, and exports a folder that transformers alone loads and captions
with: in a Python where ``import kvideo`` fails, the recipe the export documents gives the caption
kvideo gives for the same frames. ``model=hf_vlm``'s parts assembled as a LLaVA-OneVision
(``kvideo.assemble``) do the same."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kvideo.config import ModelConfig
from kvideo.config.model import FreezeStage
from kvideo.data.settings import ClipSettings
from kvideo.model import spec
from kvideo.train.metrics import read_jsonl
from kvideo.train.run import train
from tests.helpers.cli import run_eval, run_module, run_python, run_train
from tests.helpers.configs import tiny_cli_run, tiny_config
from tests.helpers.hf_models import save_tiny_lm, save_tiny_parts
from tests.helpers.preemption import preempting_build_model
from tests.helpers.pretrained_vlms import FRAME_SIDE, pretrained_cli_overrides

pytestmark = pytest.mark.slow  # trains a model

# The tiny VLMs at two merged patches a side (2 x 2 LM tokens per 2-frame group), 4 frames.
PRETRAINED_RUN = ["trainer.max_steps=3", "trainer.val_every=0", "video.prompt=Describe the video."]

# Run in a fresh interpreter: kvideo cannot be imported, the recipe from CAPTION.md is executed as
# written, and the caption of the frames in frames.npz is printed as JSON.
WITHOUT_KVIDEO = """
import importlib.abc, json, re, sys
class NoKvideo(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "kvideo":
            raise ImportError("kvideo is not installed here")
sys.meta_path.insert(0, NoKvideo())
try:
    import kvideo
    sys.exit("kvideo imported")
except ImportError:
    pass
import numpy, torch
export = sys.argv[1]
recipe = re.search(r"```python\\n(.*?)```", open(export + "/CAPTION.md").read(), re.S).group(1)
namespace = {}
exec(recipe, namespace)
data = numpy.load(sys.argv[2])
frames, times = torch.from_numpy(data["frames"]), data["times"].tolist()
with torch.no_grad():
    logits = namespace["model"](**namespace["model_inputs"](frames, times)).logits[0, -1]
print(json.dumps({"caption": namespace["caption"](frames, times, max_new_tokens=12),
                  "next_tokens": logits.topk(5).indices.tolist(),
                  "model": type(namespace["model"]).__name__}))
"""


@pytest.fixture(scope="module")
def qwen_folder(tiny_vlms: dict[str, Path]) -> Path:
    return tiny_vlms["qwen2_5_vl"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pretrained_corpus")


def _train(corpus: Path, run_dir: Path, folder: Path, *extra: str, frame_size: int = 56) -> dict[str, Any]:
    args = [
        *tiny_cli_run(corpus, run_dir, train_clips=8, val_clips=4),
        *pretrained_cli_overrides(folder, frame_size=frame_size),
    ]
    result = run_train(*args, *PRETRAINED_RUN, *extra, cwd=run_dir.parent, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    final: dict[str, Any] = json.loads((run_dir / "final.json").read_text())
    return final


def _kvideo_caption_and_frames(run_dir: Path, video: str, out: Path) -> dict[str, Any]:
    """kvideo's caption of ``video`` and its five likeliest first tokens (the trained run, the
    caption tool's own batch), and its frames and their times saved to ``out`` for the run without
    kvideo."""
    import torch

    from kvideo.data.clip_dataset import VideoClipDataset
    from kvideo.data.loader import collate, to_device
    from kvideo.data.preprocess import pixel_statistics
    from kvideo.data.rows import ClipRow
    from kvideo.data.tokenizer import caption_turns
    from kvideo.inference import load_trained

    trained = load_trained(str(run_dir), device="cpu")
    prompt = trained.cfg.video.prompt
    row = ClipRow(path=video, caption="", clip_id="v", turns=caption_turns(prompt, "-"))  # as kvideo.caption
    sample = VideoClipDataset([row], ClipSettings.of(trained.cfg), trained.tokenizer)[0]
    assert not sample["skip_reason"]
    batch = to_device(collate([sample]), trained.device, pixel_statistics(trained.cfg.model))
    caption = trained.spec.generate(
        trained.model, batch, trained.tokenizer, prompt=prompt, max_new_tokens=12
    )[0]
    context = batch["input_ids"][:, : int(batch["answer_at"][0])]
    with torch.no_grad():
        logits = trained.model(
            batch["frames"],
            batch["frame_mask"],
            context,
            frame_times=batch["frame_times"],
            visual_at=batch["visual_at"],
        )["logits"][0, -1]
    valid = sample["frame_mask"]
    np.savez(out, frames=sample["frames"][valid].numpy(), times=sample["frame_times"][valid].numpy())
    return {"caption": caption, "next_tokens": logits.topk(5).indices.tolist()}


@pytest.mark.parametrize(
    ("kind", "model_class"),
    [
        ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
        ("qwen3_vl", "Qwen3VLForConditionalGeneration"),
        ("llava_onevision", "LlavaOnevisionForConditionalGeneration"),
        ("llava_next_video", "LlavaNextVideoForConditionalGeneration"),
        ("smolvlm", "SmolVLMForConditionalGeneration"),
        ("internvl", "InternVLForConditionalGeneration"),
    ],
)
def test_a_pretrained_vlm_trains_captions_and_exports_a_model_transformers_loads_alone(
    kind: str, model_class: str, corpus: Path, tiny_vlms: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    final = _train(corpus, run_dir, tiny_vlms[kind], frame_size=2 * FRAME_SIDE[kind])
    assert final["status"] == "completed" and final["step"] == 3
    assert np.isfinite(final["val_loss"])
    log = (run_dir / "train.log").read_text()
    assert re.search(r"parameters: vision [\d,]+ \(0 trainable\) \| projector [\d,]+ \([1-9]", log)

    video = str(next((corpus).rglob("*.mp4")))
    captioned = run_module("kvideo.caption", str(run_dir), video, cwd=tmp_path)
    assert captioned.returncode == 0, captioned.stderr[-2000:]
    assert json.loads(captioned.stdout.splitlines()[-1])["frames"] >= 2
    evaluated = run_eval(f"ckpt_path={run_dir}", "trainer.val_max_batches=1", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]

    export = run_dir / "export"
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    expected = _kvideo_caption_and_frames(run_dir, video, tmp_path / "frames.npz")
    alone = run_python("-c", WITHOUT_KVIDEO, str(export), str(tmp_path / "frames.npz"), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    got = json.loads(alone.stdout.splitlines()[-1])
    assert got == {**expected, "model": model_class}


def test_hf_vlm_parts_assembled_as_llava_onevision_train_and_export_a_model_transformers_loads_alone(
    corpus: Path, tmp_path: Path
) -> None:
    """``model=hf_vlm``'s exportable layout: ``kvideo.assemble`` joins the tower and LM with a fresh
    projector as a LLaVA-OneVision, which trains as ``model=pretrained`` and exports a model."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer, SiglipVisionModel

    vision, lm = save_tiny_parts(tmp_path / "parts")
    bare = save_tiny_lm(tmp_path / "bare", chat_template=False)
    refused = run_module(
        "kvideo.assemble",
        "--vision-path",
        str(vision),
        "--lm-path",
        str(bare),
        "--out",
        str(tmp_path / "x"),
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and refused.stderr.strip().startswith("kvideo.assemble: --lm-path: ")
    assert "no chat template" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    folder = tmp_path / "assembled"
    made = run_module(
        "kvideo.assemble",
        "--vision-path",
        str(vision),
        "--lm-path",
        str(lm),
        "--out",
        str(folder),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    info = json.loads(made.stdout.splitlines()[-1])
    assert info["tokens_per_frame"] == 4 and info["vision_feature_select_strategy"] == "full"
    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    as_list = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]}]
    as_text = [{"role": "user", "content": "<video>\nDescribe."}]
    assert tokenizer.apply_chat_template(as_list, tokenize=False) == tokenizer.apply_chat_template(
        as_text, tokenize=False
    )  # the LM's own template, fed content lists

    run_dir = tmp_path / "run"
    final = _train(corpus, run_dir, folder, frame_size=64)
    assert final["status"] == "completed" and np.isfinite(final["val_loss"])
    export = run_dir / "export"
    exported = AutoModelForImageTextToText.from_pretrained(export)
    tower = SiglipVisionModel.from_pretrained(vision).state_dict()
    kept = exported.model.vision_tower.state_dict()
    assert all(torch.equal(tower[k], kept[k]) for k in tower)  # the tower as published (frozen)

    video = str(next(corpus.rglob("*.mp4")))
    expected = _kvideo_caption_and_frames(run_dir, video, tmp_path / "frames.npz")
    alone = run_python("-c", WITHOUT_KVIDEO, str(export), str(tmp_path / "frames.npz"), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    got = json.loads(alone.stdout.splitlines()[-1])
    assert got == {**expected, "model": "LlavaOnevisionForConditionalGeneration"}


def test_lora_exports_an_adapter_on_its_base_and_a_merged_model_that_agree(
    corpus: Path, qwen_folder: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "lora"
    final = _train(corpus, run_dir, qwen_folder, "model.lora_rank=4", "model.freeze=[]")
    assert final["status"] == "completed"
    adapter = json.loads((run_dir / "export" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(qwen_folder)
    assert all("visual" not in name for name in adapter["target_modules"])  # LoRA on the LM only
    merged = run_module(
        "kvideo.export", str(run_dir), "--out", str(tmp_path / "merged"), "--merge-lora", cwd=tmp_path
    )
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert json.loads(merged.stdout)["lora"] == "merged"
    compare = (
        "import sys, torch\n"
        "from transformers import AutoModelForImageTextToText\n"
        "a, b = (AutoModelForImageTextToText.from_pretrained(p).eval() for p in sys.argv[1:3])\n"
        "ids = torch.arange(5, 30)[None]\n"
        "with torch.no_grad():\n"
        "    print(float((a(input_ids=ids).logits - b(input_ids=ids).logits).abs().max()))\n"
    )
    both = run_python("-c", compare, str(run_dir / "export"), str(tmp_path / "merged"), cwd=tmp_path)
    assert both.returncode == 0, both.stderr[-2000:]
    assert float(both.stdout.splitlines()[-1]) < 1e-4


def test_resume_is_exact_across_a_freeze_stage_and_checkpoints_hold_what_trains(
    corpus: Path, qwen_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    cfg = tiny_config(corpus, prompt="Describe the video.", max_steps=6, ckpt_every=0, val_every=0)
    cfg.video.frame_size = 56
    cfg.model = ModelConfig(
        name="pretrained",
        family="pretrained",
        path=str(qwen_folder),
        max_seq_len=32768,
        max_text_len=40,
        freeze=["vision", "lm"],  # the merger alone, then the LM too (LLaVA's recipe, compressed)
        freeze_schedule=[FreezeStage(start_step=3, unfreeze=["lm"])],
    )
    reference = train(cfg, tmp_path / "reference")
    assert reference["status"] == "completed"
    build = spec.build_model
    monkeypatch.setattr(spec, "build_model", preempting_build_model(5))  # step 3's first micro-batch
    run_dir = tmp_path / "resumed"
    assert train(cfg, run_dir)["status"] == "preempted"
    monkeypatch.setattr(spec, "build_model", build)
    final = train(cfg, run_dir)
    assert final["status"] == "completed" and final["resumed_from"] == 3

    def losses(run: Path) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in read_jsonl(run / "metrics.jsonl") if "split" not in r}

    expected, got = losses(tmp_path / "reference"), losses(run_dir)
    assert sorted(got) == list(range(1, 7))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    weights = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("hf.model.visual.blocks.") for k in weights)  # frozen all run
    assert any(k.startswith("hf.model.visual.merger.") for k in weights)
    assert any(k.startswith("hf.model.language_model.") for k in weights)  # trained from step 3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_packed_pretrained_run_trains_on_the_losses_of_the_padded_run(
    corpus: Path, qwen_folder: Path, tmp_path: Path
) -> None:
    """``data.packing=true`` with Qwen2.5-VL (multimodal rope, a clip's own visual token count):
    every step's loss is the padded run's, on fewer computed tokens."""
    padded = _train(corpus, tmp_path / "padded", qwen_folder, "trainer.log_every=1")
    packed = _train(corpus, tmp_path / "packed", qwen_folder, "trainer.log_every=1", "data.packing=true")
    steps = [
        [r for r in read_jsonl(run / "metrics.jsonl") if "split" not in r]
        for run in (tmp_path / "padded", tmp_path / "packed")
    ]
    assert len(steps[0]) == len(steps[1]) == 3
    for one, other in zip(*steps, strict=True):
        assert other["loss"] == pytest.approx(one["loss"], abs=1e-5)
    assert padded["token_efficiency"] < packed["token_efficiency"] <= 1
    assert packed["status"] == "completed"
