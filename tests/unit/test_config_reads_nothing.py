"""Composing and validating a config reads no model folder, Hugging Face cache, cgroup or ``/proc``
entry: ``kvideo.config`` is pure data and rules. The pre-flight step (``kvideo.preflight``) is
what reads them, and the same audit hook sees it do so (the control that the hook sees reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_python
from tests.helpers.hf_models import cache_snapshot, hf_cli_overrides
from tests.helpers.paths import CONF_DIR

# Runs in a fresh interpreter, so that the hook is in place before kvideo, Hydra and their lazy
# imports load, and so that no cache of an earlier test hides a read.
AUDITED = """
import json, sys
opened = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
        opened.append(str(args[0], "utf-8") if isinstance(args[0], bytes) else args[0])
sys.addaudithook(hook)
from kvideo.config import launcher_fields, config_from
from kvideo.config.compose import compose_config
composed = compose_config(json.loads(sys.argv[1]), sys.argv[2])
cfg = config_from(composed)
compose_reads = list(opened)
from kvideo.preflight import preflight
preflight(cfg, launcher_fields(composed))
print(json.dumps({"compose": compose_reads, "preflight": opened[len(compose_reads):]}))
"""


def reads_of(overrides: list[str], cwd: Path) -> dict[str, list[str]]:
    result = run_python("-c", AUDITED, json.dumps(overrides), str(CONF_DIR), cwd=cwd)
    assert result.returncode == 0, result.stderr
    reads: dict[str, list[str]] = json.loads(result.stdout.splitlines()[-1])
    return reads


def machine_or_model_reads(paths: list[str], model_roots: list[Path], hf_home: Path) -> list[str]:
    roots = tuple(str(p.resolve()) for p in [*model_roots, hf_home])
    machine = ("/proc", "/sys/fs/cgroup")
    return [p for p in paths if p.startswith(machine) or str(Path(p).resolve()).startswith(roots)]


def test_compose_and_validate_read_no_model_folder_cache_cgroup_or_proc_but_preflight_does(
    tiny_hf_parts: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tower is a local folder and the LM a hub id in the Hugging Face cache."""
    vision, lm = tiny_hf_parts
    hf_home = tmp_path / "hf_home"
    cache_snapshot(hf_home / "hub", "someone/tiny-lm", lm)
    monkeypatch.setenv("HF_HOME", str(hf_home))  # the subprocess inherits the environment
    reads = reads_of(hf_cli_overrides(vision, Path("someone/tiny-lm")), tmp_path)
    assert machine_or_model_reads(reads["compose"], [vision, lm], hf_home) == []
    assert any(str(CONF_DIR) in p for p in reads["compose"])  # Hydra's own config reads are seen
    preflight_reads = machine_or_model_reads(reads["preflight"], [vision, lm], hf_home)
    assert any(p.endswith("config.json") and str(vision) in p for p in preflight_reads)
    assert any(str(hf_home) in p for p in preflight_reads)
    assert any(p.startswith(("/proc", "/sys/fs/cgroup")) for p in preflight_reads)
