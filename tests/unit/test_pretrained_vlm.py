"""``model=pretrained`` without training: the parts map onto each family's own modules, LoRA lands
on the LM only, a batch becomes the model's inputs (skipped clips and ``max_pixels`` frames
included), and a folder the run cannot use is refused in one line before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config import DataConfig, KVideoConfig, ModelConfig, VideoConfig
from kvideo.data.batch import optional_inputs
from kvideo.data.tokenizer import IGNORE_INDEX, build_tokenizer, encode_caption
from kvideo.model.pretrained_build import build_pretrained_vlm, part_of
from kvideo.model.pretrained_vlm import PretrainedVLM
from kvideo.preflight import preflight
from kvideo.train.freeze import TrainableSchedule
from tests.helpers.pretrained_vlms import FRAME_SIDE, VLM_TYPES


def pretrained(folder: Path, **fields: Any) -> ModelConfig:
    fields.setdefault("max_seq_len", 32768)  # conf/model/pretrained.yaml's
    return ModelConfig(name="pretrained", family="pretrained", path=str(folder), max_text_len=40, **fields)


def config(folder: Path, *, video: dict[str, Any] | None = None, **fields: Any) -> KVideoConfig:
    options: dict[str, Any] = {"frame_size": 56, "max_frames": 4, "min_frames": 1}
    options.update(video or {})
    return KVideoConfig(video=VideoConfig(**options), model=pretrained(folder, **fields))


# Each family's own module names for the tower and the projector (the rest is the LM).
TOWERS = {
    "llava_onevision": ("hf.model.vision_tower.",),
    "llava_next_video": ("hf.model.vision_tower.",),
    "smolvlm": ("hf.model.vision_model.",),
    "internvl": ("hf.model.vision_tower.",),
}
PROJECTORS = {
    "qwen3_vl": ("hf.model.visual.merger.", "hf.model.visual.deepstack_merger_list."),
    "llava_onevision": ("hf.model.multi_modal_projector.", "hf.model.image_newline"),
    "llava_next_video": ("hf.model.multi_modal_projector.", "hf.model.image_newline"),
    "smolvlm": ("hf.model.connector.",),
    "internvl": ("hf.model.multi_modal_projector.",),
}


@pytest.mark.parametrize("kind", VLM_TYPES)
def test_parts_are_the_familys_own_modules_and_lora_is_on_the_lm(
    kind: str, tiny_vlms: dict[str, Path]
) -> None:
    model = build_pretrained_vlm(pretrained(tiny_vlms[kind]))
    parts = {name: part_of(name) for name, _ in model.named_parameters()}
    projector = PROJECTORS.get(kind, ("hf.model.visual.merger.",))
    tower = TOWERS.get(kind, ("hf.model.visual.",))
    assert {n for n, p in parts.items() if p == "projector"} == {n for n in parts if n.startswith(projector)}
    assert {n for n, p in parts.items() if p == "vision"} == {
        n for n in parts if n.startswith(tower) and not n.startswith(projector)
    }
    assert all(
        p == "lm" for n, p in parts.items() if n.startswith(("hf.model.language_model.", "hf.lm_head"))
    )
    schedule = TrainableSchedule(model, pretrained(tiny_vlms[kind], freeze=["vision"]), part_of=part_of)
    assert {parts[n] for n in schedule.at(0)} == {"projector", "lm"}

    lora = build_pretrained_vlm(pretrained(tiny_vlms[kind], lora_rank=4))
    adapters = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert adapters and all("lora_" in n and part_of(n) == "lm" for n in adapters)


def test_a_lora_rank_no_lm_layer_can_use_is_refused(tiny_vlms: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"^model\.lora_rank=100000 exceeds what any LoRA target can use"):
        build_pretrained_vlm(pretrained(tiny_vlms[VLM_TYPES[0]], lora_rank=100000))


@pytest.mark.parametrize("kind", VLM_TYPES)
def test_turns_reach_the_released_template_as_content_lists(kind: str, tiny_vlms: dict[str, Path]) -> None:
    """LLaVA-OneVision's and SmolVLM2's released templates render a plain-string turn as nothing:
    the prompt and the caption must still be in the text, the video where the template puts it."""
    cfg = config(tiny_vlms[kind])
    tokenizer = build_tokenizer(cfg.data, cfg.model)
    encoded = encode_caption(tokenizer, "Describe the video.", "a red ball", 40)
    decode = tokenizer._tok.decode  # type: ignore[attr-defined]
    ids = encoded.input_ids
    assert "Describe the video." in decode(ids[encoded.visual_at : encoded.answer_at])
    answer = [i for i, label in zip(ids, encoded.labels, strict=True) if label != IGNORE_INDEX]
    assert decode(answer, skip_special_tokens=True).strip() == "a red ball"
    assert 0 < encoded.visual_at < encoded.answer_at


def batch_of(folder: Path, side: int, *, resize: str = "square") -> tuple[KVideoConfig, dict[str, Any]]:
    """Two clips as the loader gives them: one of 3 frames, one whose every frame failed; frames
    two merged patches (``side``) a side, or 2 x 3 on a ``max_pixels`` canvas."""
    size, wide = 2 * side, 3 * side
    video = {"frame_size": size, "resize": resize, "max_pixels": size * wide if resize == "max_pixels" else 0}
    cfg = config(folder, video=video)
    tokenizer = build_tokenizer(cfg.data, cfg.model)
    texts = [encode_caption(tokenizer, "Describe the video.", c, 40) for c in ("a red ball", "a blue box")]
    frames = torch.randn(2, 4, 3, size, wide if resize == "max_pixels" else size)
    batch: dict[str, Any] = {
        "frames": frames,
        "frame_mask": torch.tensor([[True, True, True, False], [False] * 4]),
        "frame_times": torch.tensor([[0.0, 0.5, 1.0, -1.0], [-1.0] * 4]),
        "input_ids": torch.tensor([t.input_ids for t in texts]),
        "labels": torch.tensor([texts[0].labels, [IGNORE_INDEX] * 40]),
        "visual_at": torch.tensor([t.visual_at for t in texts]),
    }
    if resize == "max_pixels":  # the first clip's picture is square, the second fills the canvas
        batch["frame_region"] = torch.tensor([[0, 0, size, size], [0, 0, size, wide]])
    return cfg, batch


def trains_the_projector(model: PretrainedVLM, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The training forward and backward of ``batch``: a finite loss whose gradient reaches the
    projector (through the LM, from the tower's features). Returns the forward's output."""
    out: dict[str, torch.Tensor] = model(
        batch["frames"],
        batch["frame_mask"],
        batch["input_ids"],
        batch["labels"],
        frame_times=batch["frame_times"],
        **optional_inputs(batch),
    )
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    # LLaVA-NeXT-Video's image_newline is for images only: some projector weight, not every one
    grads = [p.grad for n, p in model.named_parameters() if part_of(n) == "projector" and p.grad is not None]
    assert any(bool(g.abs().sum() > 0) for g in grads)
    return out


@pytest.mark.parametrize(
    ("kind", "resize"), [("qwen2_5_vl", "square"), ("qwen2_vl", "max_pixels"), ("qwen3_vl", "max_pixels")]
)
def test_a_batch_becomes_the_models_inputs_and_trains(
    kind: str, resize: str, tiny_vlms: dict[str, Path]
) -> None:
    cfg, batch = batch_of(tiny_vlms[kind], FRAME_SIDE[kind], resize=resize)
    model = build_pretrained_vlm(cfg.model)
    assert isinstance(model, PretrainedVLM)
    region = batch.get("frame_region")
    inputs = model.video_inputs(batch["frames"], batch["frame_mask"], batch["frame_times"], region)
    video = inputs.kwargs
    blocks = [block for block in inputs.blocks if not isinstance(block, str)]  # Qwen's are ids
    # 3 frames -> 2 temporal patches of 2 x 2 merged tokens; a clip with no frame -> 1 black patch
    width = 2 if resize == "square" else 3
    assert video["video_grid_thw"].tolist() == [[2, 4, 4], [1, 4, 2 * width]]
    assert [block.count(model.video_id) for block in blocks] == [2 * 2 * 2, 1 * 2 * width]
    assert ("second_per_grid_ts" in video) == (kind == "qwen2_5_vl")
    if kind == "qwen3_vl":  # each temporal patch after its time: frames at 0, 0.5 | 1.0 (repeated)
        text = model.hf.config  # the ids of "<0.2 seconds>" and "<1.0 seconds>" lead their patches
        first, second = model._encode("<0.2 seconds>"), model._encode("<1.0 seconds>")
        assert blocks[0][: len(first)] == first and text.vision_start_token_id in blocks[0]
        assert blocks[0][len(first) + 2 + 4 : len(first) + 2 + 4 + len(second)] == second
    else:
        assert blocks[0] == [model.start_id, *[model.video_id] * 8, model.end_id]
    ids, labels, _ = model.spliced(batch["input_ids"], batch["labels"], batch["visual_at"], blocks)
    assert labels is not None
    for row, block in enumerate(blocks):
        at = int(batch["visual_at"][row])
        assert ids[row, at : at + len(block)].tolist() == block
    assert (labels != IGNORE_INDEX).sum() == (batch["labels"] != IGNORE_INDEX).sum()  # video: no loss

    out = trains_the_projector(model, batch)
    assert out["ntokens"].tolist()[1] == 0
    # the multimodal rope positions were placed (they are only with mm_token_type_ids)
    assert model.hf.model.rope_deltas is not None


def test_llava_onevision_takes_whole_frames_and_one_newline_per_clip(tiny_vlms: dict[str, Path]) -> None:
    """Its processor's layout: (B, F, C, H, W) frames, ``<video>`` per pooled token and one for the
    newline; a clip with fewer frames repeats its last one to the batch's frame count."""
    cfg, batch = batch_of(tiny_vlms["llava_onevision"], FRAME_SIDE["llava_onevision"])
    model = build_pretrained_vlm(cfg.model)
    inputs = model.video_inputs(batch["frames"], batch["frame_mask"], batch["frame_times"], None)
    pixels, blocks = inputs.kwargs["pixel_values_videos"], inputs.blocks
    assert pixels.shape == (2, 3, 3, 56, 56)
    assert torch.equal(pixels[0, 2], batch["frames"][0, 2]) and torch.equal(
        pixels[1], torch.zeros_like(pixels[1])
    )
    assert blocks == [[model.video_id] * (3 * 4 + 1)] * 2  # 4 x 4 patches pooled to 2 x 2, + newline
    trains_the_projector(model, batch)


def test_llava_next_video_takes_whole_frames_pooled_with_no_newline(tiny_vlms: dict[str, Path]) -> None:
    """Its processor's layout: (B, F, C, H, W) frames, ``<video>`` per average-pooled token (the
    class token dropped, 4 x 4 patches pooled 2 x 2) and no newline; each answer ends with EOS,
    which its template does not write."""
    cfg, batch = batch_of(tiny_vlms["llava_next_video"], FRAME_SIDE["llava_next_video"])
    model = build_pretrained_vlm(cfg.model)
    inputs = model.video_inputs(batch["frames"], batch["frame_mask"], batch["frame_times"], None)
    blocks = inputs.blocks
    assert inputs.kwargs["pixel_values_videos"].shape == (2, 3, 3, 56, 56)
    assert blocks == [[model.video_id] * (3 * 4)] * 2
    tokenizer = build_tokenizer(DataConfig(), cfg.model)
    assert tokenizer.target_ids("a red circle")[-1] == tokenizer.eos_id
    assert tokenizer.stop_ids == [tokenizer.eos_id]  # not the space the template ends a turn with
    trains_the_projector(model, batch)


def spliced_as_the_processor_tokenizes(
    model: PretrainedVLM, batch: dict[str, Any], texts: list[str], theirs: str
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The first row spliced with its video text (``texts``, checked equal to the processor's
    ``theirs``) begins with the processor's tokens of the rendered user turn, not three pieces'
    (the text merges with its neighbours), and holds the 3 frames' 4 image tokens each. Returns
    the spliced ids and labels and the processor's tokens."""
    context = model.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe the video."}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids, labels, _ = model.spliced(batch["input_ids"], batch["labels"], batch["visual_at"], texts)
    assert labels is not None
    whole = model.tokenizer.encode(context.replace("<video>", theirs), add_special_tokens=False)
    assert ids[0, : len(whole)].tolist() == whole
    assert int((ids[0] == model.video_id).sum()) == 3 * 4
    return ids, labels, whole


def test_internvl_sees_each_frame_as_an_image_after_its_number(tiny_vlms: dict[str, Path]) -> None:
    """Its processor's layout: every clip's valid frames concatenated (sum of frames, C, H, W),
    and the text its processor writes for a video (checked against transformers' own
    ``replace_video_token``), tokenized with its neighbours as one string."""
    from types import SimpleNamespace

    from transformers.models.internvl.processing_internvl import InternVLProcessor

    cfg, batch = batch_of(tiny_vlms["internvl"], FRAME_SIDE["internvl"])
    model = build_pretrained_vlm(cfg.model)
    inputs = model.video_inputs(batch["frames"], batch["frame_mask"], batch["frame_times"], None)
    pixels, texts = inputs.kwargs["pixel_values"], inputs.blocks
    assert pixels.shape == (3 + 1, 3, 56, 56)  # the second clip's one black frame
    assert torch.equal(pixels[:3], batch["frames"][0, :3])
    tokens = SimpleNamespace(
        image_seq_length=4, start_image_token="<img>", end_image_token="</img>", image_token="<IMG_CONTEXT>"
    )
    theirs = InternVLProcessor.replace_video_token(tokens, {"pixel_values_videos": [pixels[:3]]}, 0)  # type: ignore[arg-type]
    assert texts[0] == theirs

    spliced_as_the_processor_tokenizes(model, batch, texts, theirs)
    trains_the_projector(model, batch)


def test_smolvlm_sees_each_frame_as_an_image_after_its_time(tiny_vlms: dict[str, Path]) -> None:
    """Its processor's layout: (B, F, C, H, W) frames padded with all-zero frames (which the model
    drops), and the text its processor writes for a video (checked against transformers' own
    ``replace_video_token``), tokenized with its neighbours as one string."""
    from types import SimpleNamespace

    from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor
    from transformers.video_utils import VideoMetadata

    cfg, batch = batch_of(tiny_vlms["smolvlm"], FRAME_SIDE["smolvlm"])
    model = build_pretrained_vlm(cfg.model)
    inputs = model.video_inputs(batch["frames"], batch["frame_mask"], batch["frame_times"], None)
    pixels, texts = inputs.kwargs["pixel_values"], inputs.blocks
    assert pixels.shape == (2, 3, 3, 56, 56)
    assert torch.equal(pixels[0], batch["frames"][0, :3])
    assert torch.equal(pixels[1, 0], batch["frames"][1, 0]) and not bool(pixels[1, 1:].any())

    tokens = SimpleNamespace(
        image_seq_len=4,
        image_token="<image>",
        fake_image_token="<fake_token_around_image>",
        global_image_token="<global-img>",
    )
    # frames 0, 1, 2 of a 2 fps video are shown at 0, 0.5 and 1.0 s
    metadata = VideoMetadata(total_num_frames=3, fps=2.0, frames_indices=[0, 1, 2])
    theirs = SmolVLMProcessor.replace_video_token(tokens, {"video_metadata": [metadata]}, 0)  # type: ignore[arg-type]
    assert texts[0] == theirs

    at = int(batch["visual_at"][0])
    answer = int((batch["labels"][0] != IGNORE_INDEX).nonzero()[0])
    ids, labels, whole = spliced_as_the_processor_tokenizes(model, batch, texts, theirs)
    assert (labels != IGNORE_INDEX).sum() == (batch["labels"] != IGNORE_INDEX).sum()
    assert ids[0, len(whole) :].tolist()[: 40 - answer] == batch["input_ids"][0, answer:].tolist()
    assert at > 0
    out = trains_the_projector(model, batch)
    assert out["ntokens"].tolist()[1] == 0


def copy_of(folder: Path, into: Path, **config_changes: Any) -> Path:
    shutil.copytree(folder, into)
    config = json.loads((into / "config.json").read_text())
    config.update(config_changes)
    (into / "config.json").write_text(json.dumps(config))
    return into


def test_folders_the_run_cannot_use_are_refused_in_one_line(
    tiny_vlms: dict[str, Path], tiny_hf_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    folder = tiny_vlms["qwen2_5_vl"]
    lm_only = copy_of(tiny_hf_parts[1], tmp_path / "lm")
    shutil.copyfile(folder / "preprocessor_config.json", lm_only / "preprocessor_config.json")
    with pytest.raises(
        ValueError, match=r"model\.path: .* without a vision_config .*model=hf_vlm joins a vision"
    ):
        preflight(config(lm_only), memory=False)
    molmo2 = copy_of(folder, tmp_path / "molmo2", model_type="molmo2")
    with pytest.raises(
        ValueError,
        match=r"'molmo2' model \(its video route .*finetunes "
        r"\['qwen2_vl', 'qwen2_5_vl', 'qwen3_vl', 'llava_onevision', 'llava_next_video', 'smolvlm', "
        r"'internvl'\]",
    ):
        preflight(config(molmo2), memory=False)
    llava = tiny_vlms["llava_onevision"]
    with pytest.raises(
        ValueError, match=r"video\.frame_size \(56, video\.resize=max_pixels\) must be the llava"
    ):
        preflight(config(llava, video={"resize": "max_pixels"}), memory=False)
    with pytest.raises(ValueError, match=r"= 64 \* 4 \+ 1 \+ 40 = 297 > model\.max_seq_len \(200\)"):
        preflight(config(llava, video={"max_frames": 64}, max_seq_len=200), memory=False)
    preflight(config(llava), memory=False)
    smolvlm = tiny_vlms["smolvlm"]  # 4 image tokens and at most 16 of text a frame, 40 a clip
    with pytest.raises(ValueError, match=r"= 64 \* 20 \+ 40 \+ 40 = 1360 > the model's max_position"):
        preflight(config(smolvlm, video={"max_frames": 64}), memory=False)
    preflight(config(smolvlm), memory=False)
    pickled = copy_of(folder, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(
        ValueError, match=r"only pickled weights \(pytorch_model\.bin\).*allow_pickled_weights=true"
    ):
        preflight(config(pickled), memory=False)
    preflight(config(pickled, allow_pickled_weights=True), memory=False)
    with pytest.raises(
        ValueError, match=r"video\.frame_size \(64\) must be a multiple of 28 .*video\.frame_size=56"
    ):
        preflight(config(folder, video={"frame_size": 64}), memory=False)
    with pytest.raises(
        ValueError,
        match=r"token budget exceeded: .* = ceil\(64 / 2\) \* 50176 / 28\^2 \+ 2 \+ 40 = 2090 > "
        r"the model's max_position_embeddings \(1024\)",
    ):
        preflight(config(folder, video={"frame_size": 224, "max_frames": 64}), memory=False)
    several = config(folder, video={"frame_size": 224, "max_frames": 16})
    several.data.max_visuals = 4
    with pytest.raises(
        ValueError,
        match=r"data\.max_visuals \* \(ceil.* = 4 \* \(ceil\(16 / 2\) \* 50176 / 28\^2 \+ 2\) \+ 40",
    ):
        preflight(several, memory=False)
    preflight(config(folder), memory=False)
