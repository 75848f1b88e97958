"""Shared test setup: repo paths and an isolated cache for generated corpora."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated sample corpora go to a per-session folder, never the user's cache."""
    os.environ["KVIDEO_CACHE"] = str(tmp_path_factory.mktemp("kvideo_cache"))
