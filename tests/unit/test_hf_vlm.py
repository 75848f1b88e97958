"""``model=hf_vlm`` contract: pretrained parts load offline through ``from_pretrained``, the loss
sees captions only, padded frames change nothing, generation continues exactly what the loss
trains, LoRA trains adapters only, and ``TrainableSchedule`` freezes what it says when it says.

Every model here is a tiny random one made by ``tests/helpers/hf_models.py`` with transformers'
own config classes and ``save_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from kvideo.config.model import FreezeStage, ModelConfig
from kvideo.data.tokenizer import IGNORE_INDEX, ChatTokenizer, build_tokenizer
from kvideo.model import build_model
from kvideo.model.hf_vlm import HFVideoLanguageModel
from kvideo.train.freeze import TrainableSchedule, unreached_stages
from kvideo.train.optim import param_groups
from tests.helpers.configs import tiny_hf_model
from tests.helpers.hf_models import save_tiny_lm, save_tiny_tower

MAX_FRAMES = 3
TEXT_LEN = 24


def hf_config(vision: Path, lm: Path, **changes: object) -> ModelConfig:
    return tiny_hf_model(vision, lm, max_text_len=TEXT_LEN, **changes)


def build(cfg: ModelConfig) -> tuple[Any, ChatTokenizer]:
    torch.manual_seed(0)
    tokenizer = build_tokenizer(None, cfg)  # type: ignore[arg-type]
    assert isinstance(tokenizer, ChatTokenizer)
    model: Any = build_model(cfg, vocab_size=tokenizer.vocab_size, max_frames=MAX_FRAMES, frame_size=64)
    assert isinstance(model, HFVideoLanguageModel)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def parts(tiny_hf_parts: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_hf_parts


def batch(tokenizer: Any, captions: list[str], frames_valid: list[int]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    b = len(captions)
    encoded = [tokenizer.encode_example("Describe the video.", c, TEXT_LEN) for c in captions]
    mask = torch.tensor([[i < n for i in range(MAX_FRAMES)] for n in frames_valid])
    times = torch.where(mask, torch.arange(MAX_FRAMES, dtype=torch.float32) * 0.5, torch.tensor(-1.0))
    return {
        "frames": torch.randn(b, MAX_FRAMES, 3, 64, 64, generator=g),
        "frame_mask": mask,
        "frame_times": times,
        "input_ids": torch.tensor([e[0] for e in encoded]),
        "labels": torch.tensor([e[1] for e in encoded]),
    }


def forward(model: HFVideoLanguageModel, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return model(
        data["frames"], data["frame_mask"], data["input_ids"], data["labels"], frame_times=data["frame_times"]
    )


def test_two_tower_and_vision_only_folders_load_through_from_pretrained(
    parts: tuple[Path, Path], tmp_path: Path
) -> None:
    vision, lm = parts
    model, tokenizer = build(hf_config(vision, lm))
    assert type(model.vision.model).__name__ == "SiglipVisionModel"  # the vision half of SiglipModel
    assert type(model.lm).__name__ == "Qwen2ForCausalLM"
    from safetensors.torch import load_file

    stored = load_file(vision / "model.safetensors")
    loaded = model.vision.model.state_dict()["embeddings.patch_embedding.weight"]
    assert torch.equal(loaded, stored["vision_model.embeddings.patch_embedding.weight"])  # pretrained
    alone = save_tiny_tower(tmp_path / "alone", vision_only=True)
    model2, _ = build(hf_config(alone, lm))
    out = forward(model2, batch(tokenizer, ["a red circle moves left"], [2]))
    assert out["logits"].shape == (1, TEXT_LEN, tokenizer.vocab_size)


def test_loss_counts_only_the_assistant_turn(parts: tuple[Path, Path]) -> None:
    model, tokenizer = build(hf_config(*parts))
    data = batch(tokenizer, ["a red circle moves left", "a blue square moves up"], [3, 2])
    out = forward(model, data)
    labelled = data["labels"][:, 1:] != IGNORE_INDEX
    assert torch.equal(out["ntokens"], labelled.sum(1))
    target = tokenizer.target_ids("a red circle moves left")
    assert tokenizer.decode(target) == "a red circle moves left"
    assert target[-2:] == [tokenizer.stop_ids[0], *tokenizer.encode("\n")]  # <|im_end|>\n ends the turn
    context = tokenizer.context_ids("Describe the video.")
    assert data["labels"][0, : len(context)].eq(IGNORE_INDEX).all()
    assert data["labels"][0, len(context) : len(context) + len(target)].tolist() == target
    assert torch.isfinite(out["loss"])


def test_padded_frames_change_nothing(parts: tuple[Path, Path]) -> None:
    model, tokenizer = build(hf_config(*parts, motion_tokens=True))
    data = batch(tokenizer, ["a red circle moves left"], [2])
    other = dict(data)
    other["frames"] = data["frames"].clone()
    other["frames"][:, 2:] = torch.randn_like(other["frames"][:, 2:]) * 5  # the padded frame's pixels
    assert torch.allclose(forward(model, data)["nll"], forward(model, other)["nll"], atol=1e-5)
    # and a real frame does change the caption's NLL: the visual tokens reach the LM
    other["frames"][:, 0] = torch.randn_like(other["frames"][:, 0])
    assert not torch.equal(forward(model, data)["nll"], forward(model, other)["nll"])


def test_frame_times_reach_the_lm_once_the_time_embedding_trains(parts: tuple[Path, Path]) -> None:
    model, tokenizer = build(hf_config(*parts))
    data = batch(tokenizer, ["a red circle moves left"], [3])
    later = dict(data, frame_times=data["frame_times"] * 3)
    assert torch.equal(forward(model, data)["nll"], forward(model, later)["nll"])  # zero-initialised
    with torch.no_grad():
        model.projector.time.weight.normal_(generator=torch.Generator().manual_seed(0))
    # Any change is the claim: through a random tiny LM a moved frame time may move the NLL by 1e-5 only.
    assert not torch.equal(forward(model, data)["nll"], forward(model, later)["nll"])


def test_all_frames_failed_stays_finite(parts: tuple[Path, Path]) -> None:
    model, tokenizer = build(hf_config(*parts))
    out = forward(model, batch(tokenizer, ["a red circle moves left"], [0]))
    assert torch.isfinite(out["logits"]).all()


def test_generate_continues_with_the_positions_the_loss_trains(parts: tuple[Path, Path]) -> None:
    """The LM's own generate (KV cache, positions from the mask) picks the same greedy tokens as
    argmax over full forwards of the training computation, on a clip with a padded frame."""
    model, tokenizer = build(hf_config(*parts))
    data = batch(tokenizer, ["x"], [2])
    context = torch.tensor([tokenizer.context_ids("Describe the video.")])
    generated = model.generate(
        data["frames"],
        data["frame_mask"],
        context,
        frame_times=data["frame_times"],
        max_new_tokens=6,
        stop_ids=[-1],  # never stops: compare all 6
    )[0]
    ids = context
    for _ in range(6):
        logits = model(data["frames"], data["frame_mask"], ids, frame_times=data["frame_times"])["logits"]
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert generated == ids[0, context.shape[1] :].tolist()


def test_lora_trains_the_adapters_only(parts: tuple[Path, Path]) -> None:
    model, _ = build(hf_config(*parts, lora_rank=4, freeze=["vision"]))
    schedule = TrainableSchedule(model, hf_config(*parts, lora_rank=4, freeze=["vision"]))
    schedule.apply(0)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained
    assert all(n.startswith("projector.") or ".lora_" in n for n in trained)
    assert any(".lora_A." in n and "q_proj" in n for n in trained)
    assert any("down_proj.lora_B" in n for n in trained)


def test_lora_on_a_model_without_the_targets_names_the_layers_it_has(parts: tuple[Path, Path]) -> None:
    with pytest.raises(
        ValueError,
        match=r"model\.lora_targets \['c_attn'\] are not linear layers .*"
        r"its linear layers are named \[.*'q_proj'.*\]",
    ):
        build(hf_config(*parts, lora_rank=4, lora_targets=["q_proj", "c_attn"]))


def test_a_lora_rank_no_target_can_use_is_refused(parts: tuple[Path, Path]) -> None:
    """LoRA of rank r on an (out x in) layer is an update of rank <= min(in, out)."""
    from transformers import AutoConfig

    width = AutoConfig.from_pretrained(parts[1]).hidden_size  # q_proj's (and the widest) min(in, out)
    build(hf_config(*parts, lora_rank=width))  # full rank: allowed
    with pytest.raises(
        ValueError,
        match=rf"^model\.lora_rank={width + 1} exceeds what any LoRA target can use: .*"
        rf"at most {width}; use model\.lora_rank <= {width}$",
    ):
        build(hf_config(*parts, lora_rank=width + 1))


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% for m in messages %}{{ m.content }", r"is not valid Jinja \(line 1: .*\)$"),
        ("{{ raise_exception('only user and assistant roles') }}", r"refused the conversation: only user"),
    ],
)
def test_a_broken_chat_template_is_one_line_naming_the_folder(
    tmp_path: Path, parts, template: str, message: str
) -> None:
    lm = save_tiny_lm(tmp_path / "lm")
    (lm / "chat_template.jinja").write_text(template)
    tok = build_tokenizer(None, hf_config(parts[0], lm))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^model\.lm_path: the chat template of {lm} {message}"):
        tok.context_ids("hi")


def test_weights_that_do_not_fit_the_config_name_the_weights_and_shapes(tmp_path: Path, parts) -> None:
    """transformers logs its load report, then raises "look at the above report", which a
    quiet load swallowed: the line names the folder, the weights and both shapes."""
    lm = save_tiny_lm(tmp_path / "lm")
    config = json.loads((lm / "config.json").read_text())
    width = config["intermediate_size"]
    (lm / "config.json").write_text(json.dumps({**config, "intermediate_size": 2 * width}))
    with pytest.raises(
        ValueError,
        match=rf"^the weights in {lm} do not match its config\.json: model\.layers\.\{{0, 1\}}\.mlp\.\w+_proj"
        rf"\.weight is \[(64, {width}|{width}, 64)\] in the weights, "
        rf"\[(64, {2 * width}|{2 * width}, 64)\] by the config; .* \(and 1 more\)$",
    ):
        build(hf_config(parts[0], lm))


def test_a_tokenizer_without_chat_template_frames_text_with_bos_and_eos(tmp_path: Path, parts) -> None:
    lm = save_tiny_lm(tmp_path / "plain", chat_template=False)
    tok = build_tokenizer(None, hf_config(parts[0], lm))  # type: ignore[arg-type]
    assert tok.target_ids("a red circle") == [*tok.encode("a red circle"), tok.eos_id]
    assert tok.context_ids("hi") == tok.encode("hi")  # this tokenizer has no BOS


# ----------------------------------------------------------------------------- what trains


def test_freeze_schedule_follows_llavas_recipe_and_is_a_function_of_the_step(
    parts: tuple[Path, Path],
) -> None:
    cfg = hf_config(
        *parts,
        freeze=["vision", "lm"],
        freeze_schedule=[
            FreezeStage(start_step=5, unfreeze=["lm"]),
            FreezeStage(start_step=9, freeze=["lm.*.embed_tokens.*"]),
        ],
    )
    model, _ = build(cfg)
    schedule = TrainableSchedule(model, cfg)
    assert all(n.startswith("projector.") for n in schedule.at(0))
    assert schedule.at(4) == schedule.at(0)
    at5 = schedule.at(5)
    assert any(n.startswith("lm.") for n in at5) and not any(n.startswith("vision.") for n in at5)
    assert not any("embed_tokens" in n for n in schedule.at(9))
    assert schedule.ever() == at5
    assert schedule.apply(0) is False  # the first application is the build, not a change
    assert schedule.apply(3) is False
    assert schedule.apply(5) is True
    assert {n for n, p in model.named_parameters() if p.requires_grad} == at5
    assert TrainableSchedule(model, cfg).at(7) == at5  # a fresh schedule (a resumed run) agrees


def test_a_stage_the_run_never_reaches_is_said(parts: tuple[Path, Path]) -> None:
    cfg = hf_config(
        *parts,
        freeze_schedule=[
            FreezeStage(start_step=5, freeze=["lm"]),
            FreezeStage(start_step=10, freeze=["vision"]),
        ],
    )
    assert unreached_stages(cfg, 11) == []
    assert unreached_stages(cfg, 10) == [
        "model.freeze_schedule[1] starts at step 10, not before trainer.max_steps=10: it takes no "
        "effect in this run"
    ]


def test_freeze_patterns_must_match_and_something_must_train(parts: tuple[Path, Path]) -> None:
    model, _ = build(hf_config(*parts))
    with pytest.raises(ValueError, match=r"model\.freeze: 'lm\.nothing\.\*' matches no parameter"):
        TrainableSchedule(model, hf_config(*parts, freeze=["lm.nothing.*"]))
    with pytest.raises(ValueError, match=r"nothing trains from step 0 on"):
        TrainableSchedule(model, hf_config(*parts, freeze=["vision", "projector", "lm"]))


def test_part_learning_rates_make_one_group_pair_per_part(parts: tuple[Path, Path]) -> None:
    cfg = hf_config(*parts, freeze=[], lm_lr=1e-5, vision_lr=1e-6)
    model, _ = build(cfg)
    groups = param_groups(model, 0.1, lr_of_part=lambda part: cfg.part_lr(part, 1e-3))
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["lm/decay"] == lrs["lm/no_decay"] == 1e-5
    assert lrs["vision/decay"] == 1e-6
    assert lrs["projector/decay"] == 1e-3
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("family", ["builtin", "hf"])
def test_activation_checkpointing_recomputes_without_changing_the_gradients(
    family: str, parts: tuple[Path, Path]
) -> None:
    def gradients(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        if family == "hf":
            cfg = hf_config(*parts, freeze=[], activation_checkpointing=checkpointing)
            model, tokenizer = build(cfg)
            data = batch(tokenizer, ["a red circle moves left", "a blue square moves up"], [3, 2])
        else:
            cfg = ModelConfig(
                vision_width=32,
                vision_heads=2,
                lm_width=32,
                lm_heads=2,
                tokens_per_frame=4,
                activation_checkpointing=checkpointing,
            )
            torch.manual_seed(0)
            model = build_model(cfg, vocab_size=259, max_frames=MAX_FRAMES, frame_size=64)
            from kvideo.data.tokenizer import ByteTokenizer

            data = batch(ByteTokenizer(), ["a red circle moves left", "a blue square moves up"], [3, 2])
        model.train()
        mlp = (model.lm.model.layers[0] if family == "hf" else model.lm.blocks[0]).mlp
        calls = []
        run_mlp = mlp.forward

        def counted(*args: Any) -> torch.Tensor:  # module hooks do not fire during recomputation
            calls.append(1)
            return run_mlp(*args)

        mlp.forward = counted
        loss = forward(model, data)["loss"]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads, len(calls)

    loss, grads, runs = gradients(False)
    loss_ckpt, grads_ckpt, runs_ckpt = gradients(True)
    assert (runs, runs_ckpt) == (1, 2)  # the LM's first block's MLP ran again in the backward pass
    assert torch.allclose(loss, loss_ckpt)
    assert grads.keys() == grads_ckpt.keys() and grads
    for name in grads:
        assert torch.allclose(grads[name], grads_ckpt[name], atol=1e-6), name


def test_tower_parameters_past_the_feature_layer_never_train(parts: tuple[Path, Path]) -> None:
    """hidden_states[-2] of a 2-layer tower is layer 0's output: layer 1, the post-layernorm and
    SigLIP's pooling head get no gradient, so they are frozen (DDP would refuse them)."""
    cfg = hf_config(*parts, freeze=[])
    model, _ = build(cfg)
    trainable = TrainableSchedule(model, cfg).at(0)
    tower = {n for n in trainable if n.startswith("vision.")}
    assert any(".layers.0." in n for n in tower)
    assert not any(".layers.1." in n or "post_layernorm" in n or ".head." in n for n in tower)
    model.train()
    data = batch(build_tokenizer(None, cfg), ["a red circle moves left"], [2])  # type: ignore[arg-type]
    forward(model, data)["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
