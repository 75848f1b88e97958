"""``make gpu-carry``: the wheels the GPU machine lacks, in ``.gpu-carry/wheels`` (git-ignored),
checked to fit what travels with the working tree (``LIMIT``, the tree included).

The machine has no network, and PyTorch, torchvision, peft, tensorboard and matplotlib, with an
older transformers; its Python is 3.12. What the check needs besides (``WHEELS``), pinned to the
versions this checkout's environment runs, so the processor comparison is against CI's
transformers. Two have no wheel on PyPI (``antlr4-python3-runtime``, ``docopt``): built here,
pure Python. PyNvVideoCodec's wheel is trimmed of what a decode never loads: the FFmpeg source
tarball it ships for its license, its samples and benchmarks, and two extra copies of each bundled
FFmpeg library (its extension loads ``libavformat.so.63`` and ``libavutil.so.61``).

Left out, and why: ``decord2`` (26.6 MB; the CPU side of the comparison is ``pyav_cpu``, whose
frames equal decord's at native size), the benchmark corpus (built on the machine by
``benchmarks.corpus``, which the ``av`` wheel serves), tensorboard/matplotlib (there already).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CARRY = REPO / ".gpu-carry"
LIMIT = 64 * 2**20
PYTHON, PLATFORMS = "3.12", ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PYNVVIDEOCODEC = "pynvvideocodec==2.2.4"
# (distribution, pinned to this environment's version)
PINNED = ("av", "hydra-core", "omegaconf", "transformers", "tokenizers", "huggingface_hub", "safetensors")
PLAIN = ("sacrebleu", "portalocker", "tabulate", "braceexpand", "num2words")
SDIST_ONLY = ("antlr4-python3-runtime==4.9.3", "docopt==0.6.2")
TRIMMED = ("pynvvideocodec-2.2.4.data/data/external/", "samples/", "benchmarks/")
DUPLICATES = (
    "PyNvVideoCodec/libavformat.so",
    "PyNvVideoCodec/libavformat.so.63.1.101",
    "PyNvVideoCodec/libavutil.so",
    "PyNvVideoCodec/libavutil.so.61.1.101",
)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download(wheels: Path) -> None:
    """The binary wheels for the machine's Python and platform, without their dependencies."""
    pins = [f"{name}=={metadata.version(name)}" for name in PINNED]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for requirement in (*pins, PYNVVIDEOCODEC, *PLAIN):
        pip(
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            PYTHON,
            *platforms,
            "--platform",
            "any",
            "--dest",
            str(wheels),
            requirement,
        )
    for requirement in SDIST_ONLY:  # pure Python, built here
        pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), requirement)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim(wheel: Path) -> Path:
    """``wheel`` rewritten without ``TRIMMED`` folders and ``DUPLICATES``, its RECORD to match."""
    out = wheel.with_name(wheel.name + ".trimmed")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in src.infolist():
            name = info.filename
            if name == record_name or name.startswith(TRIMMED) or name in DUPLICATES:
                continue
            data = src.read(info)
            dst.writestr(info, data)
            lines.append(_record_line(name, data))
        dst.writestr(record_name, "\n".join([*lines, f"{record_name},,"]) + "\n")
    out.replace(wheel)
    return wheel


def tree_bytes() -> int:
    """What the working tree sends: the files git tracks or would track (not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return sum(
        (REPO / name.decode()).stat().st_size for name in listed if name and (REPO / name.decode()).is_file()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-only", action="store_true", help="measure an existing .gpu-carry")
    args = parser.parse_args(argv)
    wheels = CARRY / "wheels"
    if not args.check_only:
        wheels.mkdir(parents=True, exist_ok=True)
        for old in wheels.glob("*.whl"):
            old.unlink()
        download(wheels)
        trim(next(wheels.glob("pynvvideocodec-*.whl")))
    sizes = {path.name: path.stat().st_size for path in sorted(wheels.glob("*.whl"))}
    tree = tree_bytes()
    total = tree + sum(sizes.values())
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"{size / 2**20:8.1f} MiB  {name}")
    print(f"{tree / 2**20:8.1f} MiB  the working tree")
    print(f"{total / 2**20:8.1f} MiB  in all, of {LIMIT / 2**20:.0f} MiB that may travel")
    if total > LIMIT:
        print(
            f"gpu-carry: {total / 2**20:.1f} MiB is over the {LIMIT / 2**20:.0f} MiB limit", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
