"""Files that are written whole or not at all, and append-only JSONL files read back whole.

A reader (a resumed run, the sweep report, a person with ``cat``) must never see half a file
because the writer was killed or the disk filled: write a temporary file beside the target,
then ``os.replace`` it, which is atomic within one filesystem. Checkpoints add an fsync of
the file and the directory on top (``kvideo.train.checkpoint``); these small text files do
not need that durability.

Append-only logs (``metrics.jsonl``, ``skipped.jsonl``) cannot be replaced on every line; a kill
mid-append leaves a torn last line, which ``read_jsonl`` skips.

A run dir may have been shared, downloaded or tampered with, and a symbolic link planted in it
(``run.lock`` -> ``~/.bashrc``) would make a plain ``open`` write through it. So kvideo never
follows a link where it writes: a temporary is created afresh (``O_EXCL``), an appended or
rewritten file is opened with ``O_NOFOLLOW``, and ``os.replace`` replaces a link itself, never
its target. Its libraries (Hydra, TensorBoard, DCP, ``save_pretrained``) do follow links, so the
entry points refuse, before any write, a run dir that holds one (``planted_link``).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import IO, Any

import yaml

NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
# Links wandb itself makes under its folder (``wandb/latest-run`` -> its newest run,
# ``wandb/<run>/logs/debug-core.log`` -> its service's log in its cache).
WANDB_LINKS = {"latest-run", "debug.log", "debug-internal.log", "debug-core.log"}


def _opened(path: Path, flags: int, mode: str) -> IO[Any]:
    try:
        fd = os.open(path, flags | NO_FOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW on a link
            raise OSError(
                e.errno, f"{path} is a symbolic link; kvideo does not write through links", str(path)
            ) from None
        raise
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8", newline="\n")


def open_new(path: Path, mode: str = "w") -> IO[Any]:
    """``path`` created afresh for writing (``w`` or ``wb``): whatever was there, a link
    included, is removed first, never written through."""
    Path(path).unlink(missing_ok=True)
    return _opened(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)


def open_append(path: Path) -> IO[Any]:
    """``path`` opened to append text, created if missing; a link there is refused."""
    return _opened(Path(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, "a")


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line ends) in one step; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open_new(tmp) as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def planted_link(root: Path, *, depth: int = 4) -> Path | None:
    """The first symbolic link inside ``root`` (``root`` itself may be one), down to ``depth``
    levels: where kvideo or its libraries would write through it. ``None`` when there is none
    or ``root`` does not exist. wandb's own links under its folder do not count."""
    root = Path(root)
    if not root.is_dir():
        return None
    base = len(root.parts)
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        inside = here.parts[base:]
        for name in sorted(dirs + files):
            if inside[:1] == ("wandb",) and name in WANDB_LINKS:
                continue
            if (here / name).is_symlink():
                return here / name
        if len(inside) + 1 >= depth:
            dirs.clear()
    return None


def refuse_planted_link(root: Path, what: str) -> None:
    """``ValueError`` naming the link when ``planted_link(root)`` finds one; ``what`` says what
    ``root`` is (``run dir``, ``export folder``)."""
    link = planted_link(root)
    if link is not None:
        raise ValueError(
            f"{what} {root}: {link.relative_to(root)} is a symbolic link (to {os.readlink(link)}), and "
            "kvideo would write through it; remove it (to keep a run elsewhere, link the run dir "
            "itself or choose another hydra.run.dir)"
        )


# A run's config.yaml is a few KiB; a file far larger than this is not one kvideo wrote.
MAX_RUN_YAML_BYTES = 4 << 20


def read_plain_yaml(path: Path) -> Any:
    """A YAML file kvideo wrote (a run dir's ``config.yaml``), read as plain data, or a
    ``ValueError`` naming it: at most ``MAX_RUN_YAML_BYTES``, and without anchors or aliases.
    kvideo writes none (``OmegaConf.to_yaml`` repeats values), and a planted file of nested
    aliases (a "billion laughs") parses small but expands exponentially in whatever walks it."""
    size = path.stat().st_size
    if size > MAX_RUN_YAML_BYTES:
        raise ValueError(f"{path}: {size} bytes, not a config kvideo wrote (at most {MAX_RUN_YAML_BYTES})")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValueError(
                    f"{path}: holds YAML anchors or aliases, which kvideo never writes (a file of "
                    "nested aliases expands exponentially); refused"
                )
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not YAML ({' '.join(str(e).split())[:200]})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; ``[]`` when the file does not exist.

    The last line may be torn (a run killed mid-write) and is then left out; a bad line anywhere
    else is damage, not a torn write, and raises ``ValueError`` naming the file and the line.
    """
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == last:
                continue
            raise ValueError(f"{path}:{number + 1}: not a JSON record ({e.msg})") from None
    return records
