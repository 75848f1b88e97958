"""WebVid as the official download leaves it, written by the tests (metadata and real clips).

The official metadata files (``results_2M_train.csv``, ``results_10M_val.csv``, ...) have the
columns ``videoid,contentUrl,duration,page_dir,name``; the official ``download.py`` splits one
into ``results_2M_train_<N>/0.csv`` ... ``<N-1>.csv`` (``numpy.array_split``: the first
``len % N`` parts one row longer) and saves each clip as ``videos/<page_dir>/<videoid>.mp4``.
``write_metadata`` / ``write_partitions`` write such CSVs, ``write_official_webvid`` a whole
download with real H.264 clips, some of them never downloaded.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import videos as V

HEADER = ("videoid", "contentUrl", "duration", "page_dir", "name")
CLIPS_PER_PAGE = 3  # WebVid's pages hold 50 results; 3 puts a few clips in each test folder


@dataclass(frozen=True)
class WebVidRow:
    """One metadata row: the clip's id, its download page folder, its caption."""

    videoid: str
    page_dir: str
    caption: str

    def video(self, root: Path) -> Path:
        """Where the official download saves this clip under ``root``."""
        return root / "videos" / self.page_dir / f"{self.videoid}.mp4"


def webvid_rows(split: str, n: int) -> list[WebVidRow]:
    """``n`` rows with WebVid-like ids (train 10..., val 20...), page folders named after their
    result range (``000001_000003``) and captions holding a comma (quoted in the CSV)."""
    first = 1 if split == "train" else 2
    rows = []
    for i in range(n):
        page = i // CLIPS_PER_PAGE
        page_dir = f"{page * CLIPS_PER_PAGE + 1:06d}_{(page + 1) * CLIPS_PER_PAGE:06d}"
        rows.append(WebVidRow(f"{first}0{i:05d}", page_dir, f"{split} clip {i}, moving stripes"))
    return rows


def write_metadata(path: Path, rows: Sequence[WebVidRow], *, header: Sequence[str] = HEADER) -> Path:
    """A metadata CSV of ``rows`` (``contentUrl`` and ``duration`` filled as WebVid does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            url = f"https://ak.picdn.net/shutterstock/videos/{row.videoid}/preview/stock-footage.mp4"
            values = {
                "videoid": row.videoid,
                "contentUrl": url,
                "duration": "PT00H00M01S",
                "page_dir": row.page_dir,
                "name": row.caption,
            }
            writer.writerow([values.get(column, "") for column in header])
    return path


def touch_videos(root: Path, rows: Sequence[WebVidRow]) -> None:
    """Empty files where the download puts ``rows``' videos: what the listing looks for (it never
    opens them), for tests of the metadata alone."""
    for row in rows:
        row.video(root).parent.mkdir(parents=True, exist_ok=True)
        row.video(root).touch()


def write_partitions(folder: Path, rows: Sequence[WebVidRow], parts: int) -> list[Path]:
    """``folder/0.csv`` ... ``<parts-1>.csv``: ``rows`` split in order as ``download.py`` does."""
    size, longer = divmod(len(rows), parts)
    paths, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < longer else 0)
        paths.append(write_metadata(folder / f"{i}.csv", rows[start:end]))
        start = end
    return paths


def write_official_webvid(
    root: Path,
    *,
    train: int,
    val: int,
    train_partitions: int = 0,
    missing: Collection[str] = (),
) -> dict[str, list[WebVidRow]]:
    """An official WebVid download under ``root``: ``results_2M_val.csv``, the train metadata as
    ``results_2M_train.csv`` split into ``results_2M_train_<train_partitions>/`` (or that file
    alone when 0), and a 1 s 64x48 H.264 clip per row except the ``missing`` video ids."""
    rows = {"train": webvid_rows("train", train), "validation": webvid_rows("validation", val)}
    write_metadata(root / "results_2M_train.csv", rows["train"])
    if train_partitions:
        write_partitions(root / f"results_2M_train_{train_partitions}", rows["train"], train_partitions)
    write_metadata(root / "results_2M_val.csv", rows["validation"])
    for row in rows["train"] + rows["validation"]:
        if row.videoid not in missing:
            V.make_h264(row.video(root), seconds=1.0, fps=10, gop=5, width=64, height=48)
    return rows
