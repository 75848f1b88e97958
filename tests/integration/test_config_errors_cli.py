"""Every field of every config group refuses a bad value before any work, with a message that
names the field and what it accepts.

Most cases go through the compose API + ``kvideo.preflight.checked`` (what ``train.py`` runs,
minus the process start-up), parametrized over a table that a completeness test checks against the
dataclasses' fields, so a new field without a case fails here. A handful go through the real
CLI (``python train.py <field>=<bad>``): non-zero exit, the message on stderr, and no run
artifacts (metrics.jsonl, checkpoints). ``tests/integration/test_cli.py`` has the video-group CLI and
multirun cases; the multirun here puts the bad point in another group (trainer).

Fields whose bad values can only be seen at run time (paths that must exist) are checked
through the CLI.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from kvideo.config import (
    DataConfig,
    DecoderConfig,
    ModelConfig,
    TrainerConfig,
    VideoConfig,
    register_configs,
)
from kvideo.preflight import checked
from tests.helpers.cli import run_train
from tests.helpers.hf_models import hf_cli_overrides
from tests.helpers.paths import CONF_DIR

register_configs()


# (overrides, regex the error message must match). The first override's key is the field under test.
CASES: list[tuple[list[str], str]] = [
    # video
    (["video.dataset_type=bogus"], r"video\.dataset_type must be one of \[.*'sample'.*\] \(got 'bogus'\)"),
    (
        ["video.sampling_policy=bogus"],
        r"video\.sampling_policy must be one of \[.*'uniform'.*\] \(got 'bogus'\)",
    ),
    (["video.split=test"], r"video\.split must be one of \('train', 'validation'\) \(got 'test'\)"),
    (["video.max_samples=-1"], r"video\.max_samples must be non-negative \(got -1\)"),
    (["video.max_frames=0"], r"video\.max_frames must be >= 1 \(got 0\)"),
    (["video.min_frames=0"], r"video\.min_frames must be >= 1 \(got 0\)"),
    (
        ["video.min_frames=9", "video.max_frames=8"],
        r"video\.min_frames \(9\) must be <= video\.max_frames \(8\)",
    ),
    (["video.fps=-2"], r"video\.fps must be positive \(got -2\.0\)"),
    (["video.frame_size=0"], r"video\.frame_size must be positive \(got 0\)"),
    (["video.frame_size=100"], r"video\.frame_size \(100\) must be a multiple of model\.patch_size \(16\)"),
    (["video.max_frames=many"], r"video\.max_frames"),  # wrong type: Hydra's composition error
    (
        ["video.resize=crop"],
        r"video\.resize must be one of \['square', 'keep_aspect', 'max_pixels'\] \(got 'crop'\)",
    ),
    (["video.max_pixels=-1"], r"video\.max_pixels must be non-negative \(got -1\)"),
    (
        ["video.resize=max_pixels"],
        r"video\.resize=max_pixels needs model=hf_vlm or model=pretrained \(a tower that reads any "
        r"frame size\); "
        r"the builtin models take video\.resize=square or keep_aspect",
    ),
    # decoder
    (["decoder.name=ffmpeg"], r"decoder\.name must be one of \[.*'decord_cpu'.*\] \(got 'ffmpeg'\)"),
    (["decoder.num_threads=-1"], r"decoder\.num_threads must be non-negative \(got -1\)"),
    (["decoder.device_id=-2"], r"decoder\.device_id must be -1 \(local rank\) or >= 0 \(got -2\)"),
    (["decoder.timeout_s=0"], r"decoder\.timeout_s must be positive \(got 0\.0\)"),
    (["decoder.prefetch=0"], r"decoder\.prefetch must be positive \(got 0\)"),
    (["decoder.streams=0"], r"decoder\.streams must be positive \(got 0\)"),
    # video.prompt against the text slot (byte-level tokenizer: one token per byte)
    (
        ["video.prompt=" + "x" * 48],
        r"video\.prompt leaves no room for the caption: its context \(BOS \+ prompt, or the chat "
        r"template's user turn\) is 49 tokens \(byte-level\) of model\.max_text_len \(48\)",
    ),
    # data
    (
        ["data.bad_sample_policy=drop"],
        r"data\.bad_sample_policy must be one of \['mask', 'replace'\] \(got 'drop'\)",
    ),
    (["video.val_max_samples=-1"], r"video\.val_max_samples must be non-negative \(got -1\)"),
    (["data.shuffle_buffer=0"], r"data\.shuffle_buffer must be positive \(got 0\)"),
    (["data.packing=maybe"], r"data\.packing"),  # Hydra: not a valid bool
    (["data.listing_cache=maybe"], r"data\.listing_cache"),  # Hydra: not a valid bool
    (["data.remote_retry_s=-1"], r"data\.remote_retry_s must be non-negative \(got -1\.0\)"),
    (
        [
            "data.remote_retry_s=30",
            "decoder.timeout_s=30",
            "video/dataset=webdataset",
            "video.data_root=s3://b/s",
        ],
        r"data\.remote_retry_s \(30\) must be below decoder\.timeout_s \(30\): a read still retrying",
    ),
    (["data.max_tokens_per_row=-1"], r"data\.max_tokens_per_row must be non-negative \(got -1\)"),
    (["data.batch_tokens=-5"], r"data\.batch_tokens must be non-negative \(got -5\)"),
    (["data.max_visuals=0"], r"data\.max_visuals must be positive \(got 0\)"),
    (["data.max_visuals=4"], r"token budget exceeded: data\.max_visuals \* video\.max_frames \* "),
    (["data.val_cache_mb=-1"], r"data\.val_cache_mb must be non-negative \(got -1\)"),
    (
        ["data.mixture=[{name:a,dataset_type:sample,weight:-1}]"],
        r"data\.mixture source 'a': weight must be a finite number >= 0 \(got -1\.0\)",
    ),
    (
        ["data.mixture=[{name:a,dataset_type:sample,weight:0},{name:b,dataset_type:webvid,weight:0}]"],
        r"data\.mixture: every weight is 0; at least one source must have weight > 0",
    ),
    (
        ["data.mixture=[{name:a,dataset_type:bogus}]"],
        r"data\.mixture source 'a': dataset_type must be one of \[.*'sample'.*\] \(got 'bogus'\)",
    ),
    (
        ["data.mixture=[{name:a,dataset_type:sample},{name:a,dataset_type:webvid}]"],
        r"data\.mixture names source\(s\) \['a'\] twice",
    ),
    (["data.mixture=[{dataset_type:sample}]"], r"data\.mixture: each source needs a name .* \(got ''\)"),
    (
        ["data.mixture=[{name:a,dataset_type:sample}]", "video.data_root=/data/clips"],
        r"video\.data_root='/data/clips' given beside data\.mixture",
    ),
    (["data.max_skip_fraction=1.5"], r"data\.max_skip_fraction must be in \[0\.0, 1\.0\] \(got 1\.5\)"),
    (["data.sample_train_clips=0"], r"data\.sample_train_clips must be positive \(got 0\)"),
    (["data.sample_val_clips=0"], r"data\.sample_val_clips must be positive \(got 0\)"),
    # model
    (
        ["model.vision_backbone=resnet"],
        r"model\.vision_backbone must be one of \['vit', 'timm'\] \(got 'resnet'\)",
    ),
    (
        ["model.timm_model=vit_tiny", "model.vision_backbone=timm"],
        r"model\.timm_model and model\.timm_weights must both be set when model\.vision_backbone=timm",
    ),
    (
        ["model.timm_weights=/w.pt", "model.vision_backbone=timm"],
        r"model\.timm_model and model\.timm_weights must both be set",
    ),
    (["model.patch_size=0"], r"model\.patch_size must be positive \(got 0\)"),
    (["model.patch_stem=resnet"], r"model\.patch_stem must be one of \['linear', 'conv'\] \(got 'resnet'\)"),
    (
        ["model.patch_stem=conv", "model.patch_size=12", "video.frame_size=48"],
        r"model\.patch_size must be a power of two with model\.patch_stem=conv \(got 12\)",
    ),
    (["model.motion_tokens=sometimes"], r"model\.motion_tokens"),  # Hydra: not a valid bool
    (["model.vision_width=0"], r"model\.vision_width must be positive \(got 0\)"),
    (["model.vision_width=30"], r"model\.vision_width \(30\) must be divisible by model\.vision_heads \(4\)"),
    (["model.vision_depth=0"], r"model\.vision_depth must be positive \(got 0\)"),
    (["model.vision_heads=0"], r"model\.vision_heads must be positive \(got 0\)"),
    (["model.tokens_per_frame=0"], r"model\.tokens_per_frame must be positive \(got 0\)"),
    (["model.tokens_per_frame=3"], r"model\.tokens_per_frame must be a square number"),
    (["model.lm_width=0"], r"model\.lm_width must be positive \(got 0\)"),
    (["model.lm_depth=0"], r"model\.lm_depth must be positive \(got 0\)"),
    (["model.lm_heads=0"], r"model\.lm_heads must be positive \(got 0\)"),
    (["model.lm_heads=3"], r"model\.lm_width \(128\) must be divisible by model\.lm_heads \(3\)"),
    (["model.max_seq_len=0"], r"model\.max_seq_len must be positive \(got 0\)"),
    (["model.max_seq_len=40"], r"token budget exceeded: .* > model\.max_seq_len \(40\)"),
    (["model.max_text_len=0"], r"model\.max_text_len must be positive \(got 0\)"),
    (["model.dropout=0.95"], r"model\.dropout must be in \[0\.0, 0\.9\] \(got 0\.95\)"),
    (["model.family=jax"], r"model\.family must be one of \['builtin', 'hf', 'pretrained'\] \(got 'jax'\)"),
    (
        ["model.path=", "model=pretrained"],
        r"model\.path must be set with model=pretrained \(a folder written by save_pretrained",
    ),
    (["model.trust_remote_code=sometimes"], r"model\.trust_remote_code"),  # Hydra: not a valid bool
    (["model.allow_pickled_weights=sometimes"], r"model\.allow_pickled_weights"),
    (["model.time_embedding=sometimes"], r"model\.time_embedding"),  # Hydra: not a valid bool
    (["model.activation_checkpointing=sometimes"], r"model\.activation_checkpointing"),
    (["model.projector=qformer"], r"model\.projector must be one of \['mlp2x_gelu', 'linear'\]"),
    (
        ["model.attn_implementation=fast"],
        r"model\.attn_implementation must be one of \['sdpa', 'eager', .*\] \(got 'fast'\)",
    ),
    (
        ["model.freeze=[tower]"],
        r"model\.freeze: unknown part 'tower'; expected one of \['vision', 'projector', 'lm'\]",
    ),
    (
        ["model.freeze_schedule=[{start_step:5,unfreeze:[lm]},{start_step:5,freeze:[lm]}]"],
        r"model\.freeze_schedule\[1\]\.start_step \(5\) must be greater than the previous stage's \(5\)",
    ),
    (
        ["model.lora_rank=4"],
        r"model\.lora_rank applies to Hugging Face LMs \(model=hf_vlm or model=pretrained\)",
    ),
    (
        ["model.vision_lr=-1"],
        r"model\.vision_lr must be finite and non-negative \(0 = trainer\.lr; got -1\.0\)",
    ),
    (["model.projector_lr=-1"], r"model\.projector_lr must be finite and non-negative"),
    (["model.lm_lr=-1"], r"model\.lm_lr must be finite and non-negative"),
    # trainer
    (["trainer.max_steps=0"], r"trainer\.max_steps must be positive \(got 0\)"),
    (["trainer.batch_size=0"], r"trainer\.batch_size must be positive \(got 0\)"),
    (["trainer.lr=-1"], r"trainer\.lr must be positive \(got -1\.0\)"),
    (["trainer.weight_decay=-0.1"], r"trainer\.weight_decay must be non-negative \(got -0\.1\)"),
    (["trainer.warmup_steps=-1"], r"trainer\.warmup_steps must be non-negative \(got -1\)"),
    (["trainer.min_lr_ratio=1.5"], r"trainer\.min_lr_ratio must be in \[0\.0, 1\.0\] \(got 1\.5\)"),
    (["trainer.grad_clip=-1"], r"trainer\.grad_clip must be non-negative \(got -1\.0\)"),
    (["trainer.grad_accum=0"], r"trainer\.grad_accum must be positive \(got 0\)"),
    (["trainer.device=tpu"], r"trainer\.device must be one of \['auto', 'cpu', 'cuda'\] \(got 'tpu'\)"),
    (["trainer.backend=mpi"], r"trainer\.backend must be one of \['auto', 'gloo', 'nccl'\] \(got 'mpi'\)"),
    (["trainer.strategy=zero3"], r"trainer\.strategy must be one of \['ddp', 'fsdp'\] \(got 'zero3'\)"),
    (
        ["trainer.fsdp_cpu_offload=true"],
        r"trainer\.fsdp_cpu_offload offloads FSDP shards: it needs trainer\.strategy=fsdp \(got 'ddp'\)",
    ),
    (
        ["trainer.ckpt_async=true"],
        r"trainer\.ckpt_async saves DCP checkpoints: it needs trainer\.strategy=fsdp \(got 'ddp'\)",
    ),
    (
        ["trainer.precision=fp8"],
        r"trainer\.precision must be one of \['auto', 'bf16', 'fp32'\] \(got 'fp8'\)",
    ),
    (["trainer.compile=maybe"], r"trainer\.compile"),  # Hydra: "'maybe' is not a valid bool"
    (["trainer.export_at_end=maybe"], r"trainer\.export_at_end"),
    (["trainer.val_predictions=-1"], r"trainer\.val_predictions must be non-negative \(got -1\)"),
    (["trainer.num_workers=-1"], r"trainer\.num_workers must be non-negative \(got -1\)"),
    (["trainer.log_every=0"], r"trainer\.log_every must be positive \(got 0\)"),
    (["trainer.ckpt_every=-1"], r"trainer\.ckpt_every must be non-negative \(got -1\)"),
    (["trainer.val_every=-1"], r"trainer\.val_every must be non-negative \(got -1\)"),
    (["trainer.val_max_batches=-1"], r"trainer\.val_max_batches must be non-negative \(got -1\)"),
    (["trainer.seed=-1"], r"trainer\.seed must be non-negative \(got -1\)"),
    (
        ["trainer.loggers=[tensorboard,tb]"],
        r"trainer\.loggers entries must each be one of \['tensorboard', 'wandb'\] \(got 'tb'\)",
    ),
    (["trainer.loggers=[wandb,wandb]"], r"trainer\.loggers lists 'wandb' twice"),
    (["trainer.resume=maybe"], r"trainer\.resume must be one of \['auto', 'force', 'never'\] \(got"),
    (["trainer.keep_last=0"], r"trainer\.keep_last must be positive \(got 0\)"),
    (["trainer.keep_best=Val Loss"], r"trainer\.keep_best must name a validation metric such as val_loss"),
    (
        ["trainer.keep_best_mode=median"],
        r"trainer\.keep_best_mode must be one of \['min', 'max'\] \(got 'median'\)",
    ),
    (["trainer.wandb_project=''"], r"trainer\.wandb_project must be a non-empty W&B project name \(got ''\)"),
    # upper bounds on sizes that allocate (a typo must fail here, not in the allocator)
    (
        ["video.frame_size=65536"],
        r"video\.frame_size must be at most 4096 \(got 65536\): frames are resized to this square side; "
        r"4096 covers 4K video",
    ),
    (["video.frame_size=1000000000"], r"video\.frame_size must be at most 4096 \(got 1000000000\)"),
    (
        ["video.max_frames=10000"],
        r"video\.max_frames must be at most 8192 \(got 10000\): 8192 frames is 68 minutes at 2 fps",
    ),
    (
        ["model.max_seq_len=100000000"],
        r"model\.max_seq_len must be at most 131072 \(got 100000000\): 131072 \(128K\) positions",
    ),
    (
        ["model.vision_width=32768"],
        r"model\.vision_width must be at most 16384 \(got 32768\): 16384 is the width of the widest",
    ),
    (["model.lm_width=32768"], r"model\.lm_width must be at most 16384 \(got 32768\)"),
    (["model.vision_depth=1000"], r"model\.vision_depth must be at most 256 \(got 1000\): deeper than any"),
    (["model.lm_depth=1000"], r"model\.lm_depth must be at most 256 \(got 1000\)"),
    (["trainer.batch_size=100000"], r"trainer\.batch_size must be at most 65536 \(got 100000\)"),
    # the memory estimate (kvideo/preflight/memory.py) against this machine: sizes no machine holds
    (
        ["trainer.batch_size=4096", "video.frame_size=4096"],
        r"host memory: this run needs at least [\d.]+ TiB > 90% of [\d.]+ [KMGTP]iB \(.*\): .*"
        r"frames in flight = trainer\.batch_size \* video\.max_frames \* video\.frame_size\^2 \* 3 B \* "
        r"\(trainer\.num_workers \* 4 prefetched \+ 1 in training\) batches "
        r"= 4096 \* 8 \* 4096\^2 \* 3 B \* \(2 \* 4 \+ 1\) = 13\.5 TiB",
    ),
    (
        ["model.lm_width=16384", "model.lm_depth=256", "trainer.device=cpu"],
        r"host memory: this run needs at least [\d.]+ TiB .*model states = parameters \* 16 B "
        r"\(fp32 weights 4, grads 4, AdamW moments 8\) = [\d,]+ \* 16 B = [\d.]+ TiB",
    ),
]

# Values that slip through naive "x <= 0" checks: NaN compares false with everything and would
# poison training; an infinite timeout overflows threading's wait; numpy raises on a negative
# seed deep inside corpus generation.
NON_FINITE: list[tuple[list[str], str]] = [
    (["data.sample_seed=-1"], r"data\.sample_seed must be non-negative \(got -1\)"),
    (["video.fps=nan"], r"video\.fps must be [^(]*(positive|finite)"),
    (["trainer.lr=nan"], r"trainer\.lr must be [^(]*(positive|finite)"),
    (["decoder.timeout_s=inf"], r"decoder\.timeout_s must be [^(]*(positive|finite)"),
    (["model.lm_lr=inf"], r"model\.lm_lr must be finite and non-negative \(0 = trainer\.lr; got inf\)"),
]

# Checked when the run starts (they name files that must exist), through the real CLI below.
RUNTIME_CHECKED = {
    "video.data_root": (
        ["video/dataset=manifest", "video.data_root=/nonexistent/m.jsonl"],
        "video.data_root='/nonexistent/m.jsonl': no such manifest file or folder",
    ),
    "data.tokenizer": (
        ["data.tokenizer=/nonexistent/tokenizer.json"],
        "data.tokenizer='/nonexistent/tokenizer.json': no tokenizer.json there",
    ),
    "data.blocklist": (
        ["data.blocklist=/nonexistent/blocklist.txt"],
        "data.blocklist='/nonexistent/blocklist.txt': no such file",
    ),
    "trainer.init_from": (
        ["trainer.init_from=/nonexistent/run"],
        "trainer.init_from='/nonexistent/run': no such run dir, checkpoint or export",
    ),
}

# Free-form labels: any string is a valid value (no bad value exists to test).
FREE_FORM = {"video.dataset_name", "model.name"}

GROUPS = {
    "video": VideoConfig,
    "decoder": DecoderConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "trainer": TrainerConfig,
}


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _field(overrides: list[str]) -> str:
    return overrides[0].split("=", 1)[0]


def _params(cases: list[tuple[list[str], str]], marks=()):
    return [pytest.param(o, m, id=" ".join(o), marks=marks) for o, m in cases]


@pytest.mark.parametrize(("overrides", "message"), _params(CASES + NON_FINITE))
def test_bad_value_is_refused_naming_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises((ValueError, ConfigCompositionException)) as info:
        checked(compose_cfg(overrides))
    text = str(info.value) + " " + str(info.value.__cause__ or "")
    assert re.search(message, text), text


# model=hf_vlm cases on the tiny Hugging Face parts ({vision} / {lm}: their folders; {root}: the
# folder holding both, which is no model folder).
HF_CASES = [
    (
        ["model.vision_path={root}"],
        r"model\.vision_path='.*' is not a Hugging Face model folder: expected a config\.json in it",
    ),
    (
        ["model.lm_path=nobody/no-such-model"],
        r"model\.lm_path='nobody/no-such-model' is neither a local folder nor in the Hugging Face cache .*"
        r"fetch it beforehand where there is network \(`hf download nobody/no-such-model`\)",
    ),
    (
        ["model.vision_feature_layer=9"],
        r"model\.vision_feature_layer \(9\) is outside the tower's 3 hidden states",
    ),
    (["model.lora_targets=[]", "model.lora_rank=4"], r"model\.lora_targets must name at least one module"),
    (["model.lora_alpha=0", "model.lora_rank=4"], r"model\.lora_alpha must be positive \(got 0\)"),
    (["model.lora_dropout=1.5", "model.lora_rank=4"], r"model\.lora_dropout must be in \[0\.0, 0\.9\]"),
    (
        ["video.max_frames=200", "video.min_frames=1"],
        r"token budget exceeded: video\.max_frames \* model\.tokens_per_frame \+ model\.max_text_len "
        r"= 200 \* 4 \+ 64 = 864 > the LM's max_position_embeddings \(512\)",
    ),
    (
        ["video.frame_size=224"],
        r"video\.frame_size \(224\) must equal the vision tower's image_size \(64, from model\.vision_path",
    ),
    (
        ["model.tokens_per_frame=25"],
        r"model\.tokens_per_frame \(25\) cannot exceed the tower's patch grid .* = \(64 / 16\)\^2 = 16",
    ),
    (
        ["video.resize=max_pixels", "trainer.strategy=fsdp"],
        r"video\.resize=max_pixels with trainer\.strategy=fsdp: each clip shape is its own tower forward",
    ),
    (
        ["video.resize=max_pixels", "model.tokens_per_frame=9"],
        r"video\.resize=max_pixels pools the patch grid by a whole stride, but the 4x4 grid of a "
        r"video\.frame_size square does not pool to model\.tokens_per_frame=9 \(4 / 3 is not a whole "
        r"number\); choose model\.tokens_per_frame in \[1, 4, 16\]",
    ),
    (
        ["video.resize=max_pixels", "video.max_pixels=65536", "video.max_frames=64"],
        r"token budget exceeded: video\.max_frames \* \(most tokens of a video\.max_pixels frame\) \+ "
        r"model\.max_text_len = 64 \* 64 \+ 64 = 4160 > the LM's max_position_embeddings \(512\)",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), _params(HF_CASES))
def test_bad_hf_vlm_value_is_refused_naming_the_field(
    overrides: list[str], message: str, tiny_hf_parts: tuple[Path, Path]
) -> None:
    vision, lm = tiny_hf_parts
    names = {"vision": vision, "lm": lm, "root": vision.parent}
    with pytest.raises(ValueError, match=message):
        checked(compose_cfg([*hf_cli_overrides(vision, lm), *(o.format(**names) for o in overrides)]))


def test_every_field_of_every_group_has_a_bad_value_case() -> None:
    fields = {f"{group}.{f.name}" for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}
    covered = {_field(o) for o, _ in CASES + NON_FINITE + HF_CASES} | set(RUNTIME_CHECKED) | FREE_FORM
    assert fields - covered == set(), "fields without a bad-value test"
    assert covered - fields == set(), "cases for fields that do not exist"


# ----------------------------------------------------------------------------- real CLI


def assert_no_run_artifacts(run_dir: Path) -> None:
    assert not (run_dir / "metrics.jsonl").exists()
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "final.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.lr=-1", "kvideo: invalid config: trainer.lr must be positive (got -1.0)"),
        ("model.tokens_per_frame=3", "model.tokens_per_frame must be a square number"),
        (
            "data.bad_sample_policy=drop",
            "data.bad_sample_policy must be one of ['mask', 'replace'] (got 'drop')",
        ),
        ("decoder.timeout_s=0", "decoder.timeout_s must be positive (got 0.0)"),
        ("trainer.max_steps=many", "Value 'many' of type 'str' could not be converted to Integer"),
    ],
)
def test_cli_exits_before_work(override: str, message: str, tmp_path: Path) -> None:
    result = run_train(override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert override.split("=")[0] in result.stderr
    assert_no_run_artifacts(tmp_path / "run")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["video.fsp=2"], "video.fsp is not a kvideo setting; did you mean video.fps?"),
        (["+video.fsp=2"], "video.fsp is not a kvideo setting; did you mean video.fps?"),
        (
            ["trainer.max_step=10"],
            "trainer.max_step is not a kvideo setting; did you mean trainer.max_steps?",
        ),
        (
            ["-m", "video.fps=1", "trainr.lr=1,2"],
            "trainr.lr is not a kvideo setting; did you mean trainer.lr?",
        ),
        (["data.val_max_samples=5"], "data.val_max_samples is now video.val_max_samples"),
    ],
)
def test_a_key_the_schema_lacks_is_refused_with_the_one_meant(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    """However it is added: Hydra would say "use +video.fsp=2", and the schema would then drop it."""
    result = run_train(
        *overrides, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"kvideo: invalid config: {message}"
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("name", ["x.jsonl", "clips.csv", "existing"])
def test_a_sample_data_root_that_names_a_file_is_refused(name: str, tmp_path: Path) -> None:
    """The user forgot video/dataset=manifest: the synthetic corpus used to be generated under
    x.jsonl/raw/ and trained on, exit 0."""
    root = tmp_path / name
    if name == "existing":
        root.write_text('{"video": "a.mp4", "caption": "x"}\n')
    result = run_train(f"video.data_root={root}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"kvideo: invalid config: video.data_root={str(root)!r} names a file"
    )
    assert "video/dataset=manifest" in result.stderr
    assert root.is_file() if name == "existing" else not root.exists()
    assert_no_run_artifacts(tmp_path / "run")


def test_a_key_the_schema_lacks_in_a_composed_config_is_refused() -> None:
    """What the command line cannot see: a key from a config file (an experiment's typo)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+model.lora_rnak=8"])
    with pytest.raises(
        ValueError, match=r"^model\.lora_rnak is not a kvideo setting; did you mean model\.lora_rank\?$"
    ):
        checked(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # The probe: it used to grow to 22.5 GB and be OOM-killed after 110 s.
        (
            ["video.frame_size=65536"],
            "kvideo: invalid config: video.frame_size must be at most 4096 (got 65536)",
        ),
        # Within every bound, but one batch alone is 1.5 TiB of uint8 frames.
        (
            ["video.frame_size=4096", "trainer.batch_size=4096"],
            "frames in flight = trainer.batch_size * video.max_frames * video.frame_size^2 * 3 B * "
            "(trainer.num_workers * 4 prefetched + 1 in training) batches = 4096 * 8 * 4096^2 * 3 B "
            "* (2 * 4 + 1) = 13.5 TiB",
        ),
    ],
)
def test_cli_refuses_a_config_that_cannot_fit_within_seconds_and_writes_nothing(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    start = time.monotonic()
    result = run_train(*overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert time.monotonic() - start < 10
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("kvideo: invalid config: ")
    assert_no_run_artifacts(tmp_path / "run")


@pytest.mark.parametrize("field", sorted(RUNTIME_CHECKED))
def test_cli_missing_files_fail_before_training(field: str, tmp_path: Path) -> None:
    overrides, message = RUNTIME_CHECKED[field]
    result = run_train(*overrides, "trainer=debug", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr  # one line, the traceback only with HYDRA_FULL_ERROR=1
    assert result.stderr.strip().splitlines()[-1].startswith("kvideo: ")
    assert_no_run_artifacts(tmp_path / "run")


def test_multirun_with_a_bad_trainer_point_launches_nothing(tmp_path: Path) -> None:
    result = run_train("-m", "trainer.lr=0.001,-1", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode != 0
    assert "refusing to launch: 1 of 2 sweep points are invalid" in result.stderr
    assert "[trainer.lr=-1] trainer.lr must be positive (got -1.0)" in result.stderr
    assert "Launching" not in result.stdout + result.stderr
    assert not (tmp_path / "sweep" / "0").exists() and not (tmp_path / "sweep" / "1").exists()
