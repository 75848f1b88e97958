"""VideoConfig keeps the seed's rules; every other node names its fields in errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kvideo.config import (
    DataConfig,
    DecoderConfig,
    KVideoConfig,
    ModelConfig,
    TrainerConfig,
    VideoConfig,
    config_from,
)
from kvideo.preflight import preflight


def test_seed_defaults_are_exact() -> None:
    """The seed's fields with its defaults, plus kvideo's frame-shape fields whose defaults are the
    seed's behaviour (square frames) and the validation split's cap beside ``max_samples`` (0 = all,
    as ``max_samples``)."""
    fields = {f.name: f.default for f in dataclasses.fields(VideoConfig)}
    assert fields.pop("resize") == "square" and fields.pop("max_pixels") == 0
    assert fields.pop("val_max_samples") == 0
    assert fields == {
        "data_root": "",
        "dataset_type": "webvid",
        "dataset_name": "webvid-10M",
        "sampling_policy": "uniform",
        "split": "train",
        "max_samples": 0,
        "max_frames": 16,
        "min_frames": 4,
        "fps": 2.0,
        "frame_size": 224,
        "prompt": "",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset_type": "nope"}, "video.dataset_type must be one of ["),
        ({"sampling_policy": "nope"}, "video.sampling_policy must be one of ["),
        ({"split": "test"}, "video.split must be one of ('train', 'validation') (got 'test')"),
        ({"max_samples": -1}, "video.max_samples must be non-negative (got -1)"),
        ({"min_frames": 0}, "video.min_frames must be >= 1 (got 0)"),
        ({"max_frames": 0, "min_frames": 0}, "video.min_frames must be >= 1 (got 0)"),
        ({"max_frames": 0, "min_frames": 1}, "video.max_frames must be >= 1 (got 0)"),
        ({"min_frames": 8, "max_frames": 4}, "video.min_frames (8) must be <= video.max_frames (4)"),
        ({"fps": 0.0}, "video.fps must be positive (got 0.0)"),
        ({"fps": -2.0}, "video.fps must be positive (got -2.0)"),
        ({"frame_size": 0}, "video.frame_size must be positive (got 0)"),
    ],
)
def test_seed_rules(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        VideoConfig(**overrides)
    assert message in str(err.value)


def test_registry_choices_are_listed_in_errors() -> None:
    with pytest.raises(ValueError) as err:
        VideoConfig(sampling_policy="bogus")
    for name in ("molmo2", "qwen", "random_segment", "uniform"):
        assert name in str(err.value)


def test_plugin_registered_by_import_is_accepted() -> None:
    from kvideo.registry import SAMPLING_POLICIES

    name = "test_only_every_second"

    @SAMPLING_POLICIES.register(name)
    def every_second(*, duration: float, **_: object) -> list[float]:
        return [float(t) for t in range(int(duration) + 1)]

    try:
        assert VideoConfig(sampling_policy=name).sampling_policy == name
        with pytest.raises(ValueError, match=name):
            VideoConfig(sampling_policy="bogus")
    finally:
        SAMPLING_POLICIES._entries.pop(name)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: DecoderConfig(name="ffmpeg"), "decoder.name must be one of ["),
        (lambda: DecoderConfig(timeout_s=0), "decoder.timeout_s must be positive (got 0)"),
        (lambda: DecoderConfig(num_threads=-1), "decoder.num_threads must be non-negative (got -1)"),
        (lambda: DecoderConfig(device_id=-2), "decoder.device_id must be -1"),
        (lambda: DecoderConfig(prefetch=0), "decoder.prefetch must be positive (got 0)"),
        (lambda: DataConfig(bad_sample_policy="drop"), "data.bad_sample_policy must be one of"),
        (lambda: VideoConfig(val_max_samples=-3), "video.val_max_samples must be non-negative (got -3)"),
        (lambda: DataConfig(sample_train_clips=0), "data.sample_train_clips must be positive (got 0)"),
        (lambda: ModelConfig(vision_backbone="resnet"), "model.vision_backbone must be one of"),
        (lambda: ModelConfig(vision_backbone="timm"), "model.timm_model and model.timm_weights"),
        (lambda: ModelConfig(patch_size=0), "model.patch_size must be positive (got 0)"),
        (lambda: ModelConfig(vision_heads=3), "model.vision_width (128) must be divisible by"),
        (lambda: ModelConfig(lm_heads=5), "model.lm_width (128) must be divisible by model.lm_heads (5)"),
        (lambda: ModelConfig(tokens_per_frame=3), "model.tokens_per_frame must be a square number"),
        (lambda: ModelConfig(max_seq_len=-1), "model.max_seq_len must be positive (got -1)"),
        (lambda: ModelConfig(dropout=1.5), "model.dropout must be in [0.0, 0.9] (got 1.5)"),
        (lambda: TrainerConfig(max_steps=0), "trainer.max_steps must be positive (got 0)"),
        (lambda: TrainerConfig(lr=0.0), "trainer.lr must be positive (got 0.0)"),
        (lambda: TrainerConfig(batch_size=0), "trainer.batch_size must be positive (got 0)"),
        (lambda: TrainerConfig(num_workers=-1), "trainer.num_workers must be non-negative (got -1)"),
        (lambda: TrainerConfig(device="tpu"), "trainer.device must be one of ['auto', 'cpu', 'cuda']"),
        (lambda: TrainerConfig(precision="fp8"), "trainer.precision must be one of"),
        (lambda: TrainerConfig(min_lr_ratio=2.0), "trainer.min_lr_ratio must be in [0.0, 1.0]"),
        (lambda: TrainerConfig(log_every=0), "trainer.log_every must be positive (got 0)"),
        (lambda: TrainerConfig(grad_accum=0), "trainer.grad_accum must be positive (got 0)"),
        (
            lambda: TrainerConfig(loggers=["tensorboard", "tb"]),
            "trainer.loggers entries must each be one of ['tensorboard', 'wandb'] (got 'tb')",
        ),
        (lambda: TrainerConfig(loggers=["wandb", "wandb"]), "trainer.loggers lists 'wandb' twice"),
        (lambda: TrainerConfig(wandb_project=" "), "trainer.wandb_project must be a non-empty W&B project"),
    ],
)
def test_other_nodes_name_their_fields(factory, message: str) -> None:
    with pytest.raises(ValueError) as err:
        factory()
    assert message in str(err.value)


def test_token_budget_shows_the_arithmetic() -> None:
    with pytest.raises(ValueError) as err:
        KVideoConfig(video=VideoConfig(max_frames=64, frame_size=64), model=ModelConfig(max_seq_len=256))
    assert (
        "video.max_frames * model.tokens_per_frame + model.max_text_len = 64 * 4 + 48 = 304 "
        "> model.max_seq_len (256)"
    ) in str(err.value)


def test_frame_size_must_tile_into_patches() -> None:
    with pytest.raises(ValueError, match=r"video.frame_size \(60\) must be a multiple of model.patch_size"):
        KVideoConfig(video=VideoConfig(frame_size=60))


def test_to_validated_runs_post_init_on_plain_dicts() -> None:
    with pytest.raises(ValueError, match=r"video.fps must be positive \(got 0.0\)"):
        config_from({"video": {"fps": 0.0}})
    cfg = config_from({"video": {"fps": 1.0}, "trainer": {"max_steps": 7}})
    assert isinstance(cfg, KVideoConfig)
    assert cfg.video.fps == 1.0 and cfg.trainer.max_steps == 7


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: VideoConfig(frame_size=8192), "video.frame_size must be at most 4096 (got 8192): frames"),
        (lambda: VideoConfig(max_frames=9000), "video.max_frames must be at most 8192 (got 9000): 8192"),
        (lambda: ModelConfig(max_seq_len=10**8), "model.max_seq_len must be at most 131072 (got 100000000)"),
        (lambda: ModelConfig(lm_width=2**15), "model.lm_width must be at most 16384 (got 32768): 16384 is"),
        (lambda: ModelConfig(vision_depth=257), "model.vision_depth must be at most 256 (got 257): deeper"),
        (lambda: TrainerConfig(batch_size=10**6), "trainer.batch_size must be at most 65536 (got 1000000)"),
    ],
)
def test_sizes_that_allocate_have_upper_bounds_that_say_why(factory, message: str) -> None:
    with pytest.raises(ValueError) as err:
        factory()
    assert message in str(err.value)


def test_the_largest_sizes_within_the_bounds_are_accepted() -> None:
    assert VideoConfig(frame_size=4096, max_frames=8192).frame_size == 4096
    widest: dict[str, Any] = {"vision_width": 16384, "lm_width": 16384, "vision_depth": 256, "lm_depth": 256}
    model = ModelConfig(**widest, max_seq_len=131072)
    assert model.max_seq_len == 131072
    assert TrainerConfig(batch_size=65536).batch_size == 65536


def test_preflight_refuses_what_cannot_fit_in_this_machines_memory() -> None:
    big = config_from({"video": {"frame_size": 4096}, "trainer": {"batch_size": 4096}})
    with pytest.raises(
        ValueError,
        match=r"^host memory: this run needs at least [\d.]+ TiB > 90% of .*"
        r"\((cgroup limit|MemTotal in) .*frames in flight = ",
    ):
        preflight(big)


def test_tools_that_do_not_train_can_skip_the_memory_check() -> None:
    big = config_from({"video": {"frame_size": 4096}, "trainer": {"batch_size": 4096}})
    preflight(big, memory=False)
    assert big.trainer.batch_size == 4096


def test_trackers_are_a_list_on_the_command_line_with_tensorboard_by_default() -> None:
    from kvideo.config.compose import compose_config

    assert config_from(compose_config()).trainer.loggers == ["tensorboard"]
    cfg = config_from(compose_config(["trainer.loggers=[tensorboard,wandb]", "trainer.wandb_project=vlm"]))
    assert (cfg.trainer.loggers, cfg.trainer.wandb_project) == (["tensorboard", "wandb"], "vlm")


def test_every_key_has_a_one_line_description_for_help() -> None:
    """``python train.py --help`` lists each key with the first sentence of its entry in its
    dataclass's docstring (``kvideo.config.describe``)."""
    import dataclasses

    from kvideo.config.describe import field_descriptions, keys_help

    for node in dataclasses.fields(KVideoConfig):
        cls = type(getattr(KVideoConfig(), node.name))
        descriptions = field_descriptions(cls)
        for f in dataclasses.fields(cls):
            text = descriptions.get(f.name, "")
            assert text and "\n" not in text, f"{node.name}.{f.name} has no description in {cls.__name__}"
    assert "  trainer.max_steps: optimizer steps to train for (the schedule's length)" in keys_help()
