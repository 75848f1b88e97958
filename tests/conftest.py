"""Shared test setup: repo paths, an isolated cache for generated corpora, Hugging Face offline,
and the tiny Hugging Face parts the ``hf_vlm`` tests load."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# tokenizers' thread pool must not be running when tests fork (the DDP tests start ranks with
# fork): one BPE training in a fixture would otherwise leave it behind in the pytest process.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated sample corpora go to a per-session folder, never the user's cache."""
    os.environ["KVIDEO_CACHE"] = str(tmp_path_factory.mktemp("kvideo_cache"))


@pytest.fixture(scope="session", autouse=True)
def _hugging_face_offline() -> None:
    """Nothing a test runs may reach the hub: kvideo must work from local folders alone."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_hf_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(vision_path, lm_path)``: a SigLIP-shaped tower and a Qwen2-shaped LM, saved once."""
    from tests.helpers.hf_models import save_tiny_parts

    return save_tiny_parts(tmp_path_factory.mktemp("hf_parts"))


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``model_type -> folder`` of each released VLM family ``model=pretrained`` takes, tiny and
    random, saved once."""
    from tests.helpers.pretrained_vlms import VLM_TYPES, save_tiny_vlm

    return {kind: save_tiny_vlm(tmp_path_factory.mktemp(kind), kind) for kind in VLM_TYPES}
