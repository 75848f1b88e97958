"""Plugins through package entry points: choices are listed from metadata alone (the config layer
imports no plugin module), a plugin's module is imported on its first use, kvideo's own built-ins
are declared exactly as their modules register them, a bare source checkout falls back to
importing the built-ins, and a dataset from a distribution outside kvideo trains through the
real CLI without editing kvideo."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import types
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from kvideo.registry import DATASETS, DECODERS, SAMPLING_POLICIES, Registry
from tests.helpers import videos as V
from tests.helpers.configs import TINY_CLI_OVERRIDES
from tests.helpers.paths import REPO

# kvideo's own entry points are in the environment (``pip install -e .``; ``make install`` does it).
INSTALLED = any(p.module == "kvideo.data.datasets" for p in metadata.entry_points(group="kvideo.datasets"))
needs_install = pytest.mark.skipif(not INSTALLED, reason="kvideo is not installed: no entry points to read")


def write_distribution(
    root: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]
) -> Path:
    """A minimal installed distribution under ``root`` (what pip leaves in site-packages):
    ``<name>-0.1.dist-info/{METADATA, entry_points.txt}`` plus top-level ``modules``."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    sections = (
        f"[{group}]\n" + "".join(f"{key} = {module}\n" for key, module in points.items())
        for group, points in entry_points.items()
    )
    (info / "entry_points.txt").write_text("\n".join(sections))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def fresh() -> Iterator[str]:
    """A unique name for this test's group and modules; its modules leave ``sys.modules`` after."""
    tag = f"kv_plugin_{uuid.uuid4().hex[:8]}"
    yield tag
    for module in [m for m in sys.modules if m.startswith(tag)]:
        del sys.modules[module]


def _widgets(tag: str, *, builtin_module: str | None = None) -> Registry:
    """A fresh registry that plugin modules reach by import (``from <tag>_home import WIDGETS``),
    as kvideo's plugins reach ``DATASETS``."""
    home = types.ModuleType(f"{tag}_home")
    widgets: Registry[Any] = Registry(
        "widget", key="shop.widget", group=f"{tag}.widgets", builtin_module=builtin_module
    )
    home.WIDGETS = widgets  # type: ignore[attr-defined]  # a module built at run time
    sys.modules[home.__name__] = home
    return widgets


def _registers(tag: str, *names: str) -> str:
    lines = [f"from {tag}_home import WIDGETS", *(f"WIDGETS.register({n!r})(object())" for n in names)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the mechanism


def test_names_come_from_entry_points_and_get_imports_the_module_on_first_use(
    tmp_path: Path, fresh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = f"{fresh}_plugin"
    root = write_distribution(
        tmp_path, fresh, {f"{fresh}.widgets": {"gear": plugin}}, {plugin: _registers(fresh, "gear")}
    )
    monkeypatch.syspath_prepend(str(root))
    widgets = _widgets(fresh)
    assert widgets.names() == ["gear"] and "gear" in widgets
    assert plugin not in sys.modules  # listing the choices imported nothing
    gear = widgets.get("gear")
    assert plugin in sys.modules and widgets.get("gear") is gear


def test_in_process_registrations_and_entry_points_are_one_set_of_choices(
    tmp_path: Path, fresh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = f"{fresh}_plugin"
    root = write_distribution(
        tmp_path, fresh, {f"{fresh}.widgets": {"gear": plugin}}, {plugin: _registers(fresh, "gear")}
    )
    monkeypatch.syspath_prepend(str(root))
    widgets = _widgets(fresh)
    widgets.register("cog")(object())
    assert widgets.names() == ["cog", "gear"]
    with pytest.raises(KeyError, match=r"unknown shop\.widget 'bolt'; choices: \['cog', 'gear'\]"):
        widgets.get("bolt")
    assert plugin not in sys.modules  # an unknown name imports nothing either


def test_an_entry_point_whose_module_registers_nothing_says_so(
    tmp_path: Path, fresh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = f"{fresh}_plugin"
    root = write_distribution(
        tmp_path, fresh, {f"{fresh}.widgets": {"gear": plugin}}, {plugin: _registers(fresh)}
    )
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(
        ImportError, match=rf"shop\.widget 'gear': .*\['{plugin}'\].* registered no widget 'gear'"
    ):
        _widgets(fresh).get("gear")


def test_an_entry_point_naming_a_missing_module_names_the_entry_point(
    tmp_path: Path, fresh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_distribution(tmp_path, fresh, {f"{fresh}.widgets": {"gear": f"{fresh}_gone"}}, {})
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(
        ImportError, match=rf"shop\.widget 'gear': its entry point \({fresh}\.widgets\) names module"
    ):
        _widgets(fresh).get("gear")


def test_without_entry_points_for_its_builtins_a_registry_imports_them(
    tmp_path: Path, fresh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare source checkout: no metadata declares the built-ins, so they are found by import."""
    builtin = f"{fresh}_builtin"
    (tmp_path / f"{builtin}.py").write_text(_registers(fresh, "gear", "cog"))
    monkeypatch.syspath_prepend(str(tmp_path))
    widgets = _widgets(fresh, builtin_module=builtin)
    assert widgets.names() == ["cog", "gear"]
    assert builtin in sys.modules


def test_with_entry_points_for_its_builtins_a_registry_imports_nothing_to_list_them(
    tmp_path: Path, fresh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    builtin = f"{fresh}_builtin"
    points = {f"{fresh}.widgets": {"gear": builtin, "cog": builtin}}
    root = write_distribution(tmp_path, fresh, points, {builtin: _registers(fresh, "gear", "cog")})
    monkeypatch.syspath_prepend(str(root))
    widgets = _widgets(fresh, builtin_module=builtin)
    assert widgets.names() == ["cog", "gear"]
    assert builtin not in sys.modules


# ----------------------------------------------------------------------------- kvideo's built-ins


@needs_install
@pytest.mark.parametrize("registry", [DATASETS, SAMPLING_POLICIES, DECODERS], ids=lambda r: r.group)
def test_each_builtin_entry_point_names_the_module_that_registers_it(registry: Registry) -> None:
    """pyproject.toml's ``[project.entry-points."<group>"]`` and the decorators agree: a name
    declared but not registered fails at its first use; one registered but not declared is
    refused by config validation until its module happens to be imported."""
    assert registry.builtin_module is not None
    module = importlib.import_module(registry.builtin_module)
    registered = {
        name for name, obj in registry._entries.items() if obj.__module__.startswith(module.__name__)
    }
    declared = {name for name, modules in registry.declared().items() if registry.builtin_module in modules}
    assert declared == registered, "pyproject.toml's entry points or the installed metadata (make install)"
    for name in declared:
        assert registry.get(name) is registry._entries[name]


# What listing the choices must not import: the built-in plugin modules and what they pull in.
PLUGIN_AND_HEAVY_MODULES = (
    "kvideo.data.datasets",
    "kvideo.decode",
    "kvideo.sampling",
    "numpy",
    "torch",
    "av",
    "decord",
)


@needs_install
def test_the_config_layer_imports_no_plugin_module(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from kvideo.config import DecoderConfig, VideoConfig\n"
        "VideoConfig(); DecoderConfig()\n"
        f"print([m for m in {PLUGIN_AND_HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- a dataset outside kvideo

MY_CLIPS = '''
"""A dataset outside kvideo: every .mp4 under video.data_root, captioned by its file name."""

from pathlib import Path

from kvideo.data.rows import ClipRow
from kvideo.registry import DATASETS


@DATASETS.register("my_clips")
def build(video, data, *, split, max_samples):
    paths = sorted(Path(video.data_root).glob("*.mp4"))
    rows = [ClipRow(path=str(p.resolve()), caption=p.stem.replace("_", " "), clip_id=p.stem) for p in paths]
    return rows[:max_samples] if max_samples else rows
'''


@pytest.mark.slow  # trains a model
def test_a_dataset_from_a_separate_distribution_trains_through_the_cli(tmp_path: Path) -> None:
    site = write_distribution(
        tmp_path / "site", "my_clips", {"kvideo.datasets": {"my_clips": "my_clips"}}, {"my_clips": MY_CLIPS}
    )
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, colour in enumerate(("red", "green", "blue", "white")):
        V.make_h264(clips / f"{colour}_clip_{i}.mp4", seconds=1.0, fps=10)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    # As the run's dataset, and as a source of a mixture.
    for name, dataset in (
        ("alone", ["video.dataset_type=my_clips", f"video.data_root={clips}"]),
        ("mixed", [f"data.mixture=[{{name:mine,dataset_type:my_clips,data_root:'{clips}'}}]"]),
    ):
        run_dir = tmp_path / name
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "train.py"),
                *dataset,
                "trainer=debug",
                "trainer.max_steps=2",
                *TINY_CLI_OVERRIDES,
                f"hydra.run.dir={run_dir}",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        final = json.loads((run_dir / "final.json").read_text())
        assert final["step"] == 2
    assert final["sources"]["mine"]["seen"] == 2 * 2  # trainer=debug's batches of 2 (TINY_CLI_OVERRIDES)
    refused = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "video.dataset_type=bogus", f"hydra.run.dir={tmp_path}/r2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "'my_clips'" in refused.stderr  # listed among the choices
