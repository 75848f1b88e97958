"""Dataset builders: WebVid layout, manifests, errors that name the field/file/line."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from kvideo.config.data import DataConfig
from kvideo.config.video import VideoConfig
from kvideo.data.datasets.common import webvid_video_relpath
from kvideo.data.datasets.manifest import build_manifest
from kvideo.data.datasets.sample import build_sample
from kvideo.data.datasets.webvid import build_webvid
from kvideo.data.rows import ClipRow
from kvideo.data.scoring import attribute_scorers
from kvideo.registry import DATASETS
from tests.helpers import webvid as W


def _write_partition(folder: Path, name: str, rows: list[tuple[str, str]], header: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    header = header or "videoid,contentUrl,duration,page_dir,name"
    lines = [header] + [f"{vid},http://x/{vid}.mp4,PT00H00M10S,dir,{caption}" for vid, caption in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def webvid_root(tmp_path: Path) -> Path:
    data = tmp_path / "raw" / "webvid-10M" / "data"
    # Out-of-order file names: partitions are read in sorted order.
    _write_partition(
        data / "train" / "partitions", "0001.csv", [("31353427", "third"), ("14781349", "fourth")]
    )
    _write_partition(
        data / "train" / "partitions", "0000.csv", [("1066706017", "first"), ("1234567", "second")]
    )
    (data / "train" / "partitions" / "notes.txt").write_text("ignored")
    _write_partition(
        data / "val" / "partitions", "0000.csv", [("9999001", "val one"), ("9999002", "val two")]
    )
    return tmp_path


def _video(root: Path | str = "", **kw) -> VideoConfig:
    return VideoConfig(data_root=str(root), **kw)


def test_builders_are_registered() -> None:
    assert DATASETS.get("webvid") is build_webvid
    assert DATASETS.get("manifest") is build_manifest
    assert DATASETS.get("sample") is build_sample


def test_only_the_sample_corpus_registers_attribute_questions() -> None:
    """Validation asks attribute questions only of a dataset that defines them (next to its builder)."""
    (sample,) = attribute_scorers("sample")
    assert set(sample.attributes) == {"color", "shape", "direction"}
    assert attribute_scorers("webvid") == [] and attribute_scorers("manifest") == []
    with pytest.raises(KeyError, match=r"video\.dataset_type 'nope'"):
        attribute_scorers("nope")


def test_webvid_nesting_is_by_id_prefix_for_train_only() -> None:
    assert webvid_video_relpath("train", "1066706017") == "10/1066/106670/1066706017.mp4"
    assert webvid_video_relpath("validation", "1066706017") == "1066706017.mp4"


def test_webvid_train_rows_nested_paths_sorted_partitions(webvid_root: Path) -> None:
    rows = build_webvid(_video(webvid_root), DataConfig(), split="train", max_samples=0)
    assert [r.caption for r in rows] == ["first", "second", "third", "fourth"]
    assert [r.clip_id for r in rows] == ["1066706017", "1234567", "31353427", "14781349"]
    videos = webvid_root / "raw" / "webvid-10M" / "data" / "train" / "videos"
    assert rows[0].path == str(videos / "10" / "1066" / "106670" / "1066706017.mp4")
    assert all(os.path.isabs(r.path) and r.start is None and r.end is None for r in rows)


def test_webvid_validation_is_flat_under_val(webvid_root: Path) -> None:
    rows = build_webvid(_video(webvid_root), DataConfig(), split="validation", max_samples=0)
    videos = webvid_root / "raw" / "webvid-10M" / "data" / "val" / "videos"
    assert rows == [
        ClipRow(str(videos / "9999001.mp4"), "val one", clip_id="9999001"),
        ClipRow(str(videos / "9999002.mp4"), "val two", clip_id="9999002"),
    ]


def test_webvid_uses_seed_project_video_tree_when_present(webvid_root: Path) -> None:
    """KempnerForge keeps videos under <root>/raw/videos/<train|validation>/."""
    (webvid_root / "raw" / "videos" / "train").mkdir(parents=True)
    (webvid_root / "raw" / "videos" / "validation").mkdir(parents=True)
    train = build_webvid(_video(webvid_root), DataConfig(), split="train", max_samples=1)
    val = build_webvid(_video(webvid_root), DataConfig(), split="validation", max_samples=1)
    seed = webvid_root / "raw" / "videos"
    assert train[0].path == str(seed / "train" / "10" / "1066" / "106670" / "1066706017.mp4")
    assert val[0].path == str(seed / "validation" / "9999001.mp4")


def test_webvid_cap_stops_reading_early(webvid_root: Path) -> None:
    parts = webvid_root / "raw" / "webvid-10M" / "data" / "train" / "partitions"
    # Rows past the cap (and a whole later partition) are broken: never read.
    (parts / "0000.csv").write_text(
        "videoid,name\n1000001,ok one\n1000002,ok two\n,\x00broken\n" + "garbage\n" * 1000
    )
    (parts / "0001.csv").write_text("not,the,right,header\n")
    rows = build_webvid(_video(webvid_root), DataConfig(), split="train", max_samples=2)
    assert [r.caption for r in rows] == ["ok one", "ok two"]
    with pytest.raises(ValueError, match=r"0000.csv line 4"):
        build_webvid(_video(webvid_root), DataConfig(), split="train", max_samples=3)


def test_webvid_cap_spanning_partitions(webvid_root: Path) -> None:
    rows = build_webvid(_video(webvid_root), DataConfig(), split="train", max_samples=3)
    assert [r.caption for r in rows] == ["first", "second", "third"]


def test_webvid_errors_name_field_and_path(tmp_path: Path, webvid_root: Path) -> None:
    with pytest.raises(ValueError, match=r"^video.data_root must be set for dataset_type=webvid$"):
        build_webvid(_video(""), DataConfig(), split="train", max_samples=0)
    expected = tmp_path / "raw" / "other" / "data" / "val" / "partitions" / "*.csv"
    with pytest.raises(FileNotFoundError, match="no validation metadata CSV") as err:
        build_webvid(_video(tmp_path, dataset_name="other"), DataConfig(), split="validation", max_samples=0)
    assert str(expected) in str(err.value)
    bad = _write_partition(
        webvid_root / "raw" / "bad" / "data" / "train" / "partitions", "0000.csv", [], header="id,caption"
    )
    with pytest.raises(ValueError) as bad_err:
        build_webvid(_video(webvid_root, dataset_name="bad"), DataConfig(), split="train", max_samples=0)
    message = str(bad_err.value)
    assert str(bad) in message and "['videoid', 'name']" in message and "['id', 'caption']" in message


def test_webvid_rejects_path_like_videoid(webvid_root: Path) -> None:
    parts = webvid_root / "raw" / "evil" / "data" / "train" / "partitions"
    _write_partition(parts, "0000.csv", [("../../etc", "x")])
    with pytest.raises(ValueError, match=r"line 2: invalid videoid"):
        build_webvid(_video(webvid_root, dataset_name="evil"), DataConfig(), split="train", max_samples=0)


# --------------------------------------------------------------------------- webvid, official download


def _official_row(root: Path, row: W.WebVidRow) -> ClipRow:
    return ClipRow(str(row.video(root)), row.caption, clip_id=row.videoid)


def test_webvid_reads_the_official_metadata_file_with_videos_under_their_page_dir(tmp_path: Path) -> None:
    rows = W.webvid_rows("train", 4)
    W.write_metadata(tmp_path / "results_2M_train.csv", rows)
    W.touch_videos(tmp_path, rows)
    built: Any = build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=0)
    assert built == [_official_row(tmp_path, row) for row in rows]
    assert built[3].path == str(tmp_path / "videos" / "000004_000006" / "1000003.mp4")
    assert built[0].caption == "train clip 0, moving stripes"  # the quoted comma is the caption's


def test_webvid_validation_reads_the_official_val_file(tmp_path: Path) -> None:
    W.write_metadata(tmp_path / "results_10M_train.csv", W.webvid_rows("train", 3))
    val = W.webvid_rows("validation", 2)
    W.write_metadata(tmp_path / "results_10M_val.csv", val)
    W.touch_videos(tmp_path, val)
    built = build_webvid(_video(tmp_path), DataConfig(), split="validation", max_samples=0)
    assert built == [_official_row(tmp_path, row) for row in val]


def test_webvid_partition_folders_read_in_numeric_order_give_the_rows_of_the_file_they_split(
    tmp_path: Path,
) -> None:
    """11 partitions: name order would read 10.csv before 2.csv; numeric order is the file's."""
    rows = W.webvid_rows("train", 25)
    whole, split = tmp_path / "whole", tmp_path / "split"
    W.write_metadata(whole / "results_2M_train.csv", rows)
    W.write_partitions(split / "results_2M_train_11", rows, 11)
    W.write_partitions(split / "results_2M_val_2", W.webvid_rows("validation", 3), 2)
    for root in (whole, split):
        W.touch_videos(root, [*rows, *W.webvid_rows("validation", 3)])
    from_file = build_webvid(_video(whole), DataConfig(), split="train", max_samples=0)
    from_partitions = build_webvid(_video(split), DataConfig(), split="train", max_samples=0)
    assert [r.clip_id for r in from_partitions] == [r.clip_id for r in from_file] == [r.videoid for r in rows]
    assert from_partitions == [_official_row(split, row) for row in rows]
    val = build_webvid(_video(split), DataConfig(), split="validation", max_samples=0)
    assert [r.clip_id for r in val] == ["2000000", "2000001", "2000002"]


def test_webvid_partition_folders_come_before_the_file_they_split(tmp_path: Path) -> None:
    """The downloader leaves both; deleting the partitions not downloaded keeps their rows out."""
    rows = W.webvid_rows("train", 6)
    W.write_metadata(tmp_path / "results_2M_train.csv", rows)
    folder = tmp_path / "results_2M_train_3"
    W.write_partitions(folder, rows, 3)
    W.touch_videos(tmp_path, rows)
    (folder / "1.csv").unlink()
    built: Any = build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=0)
    assert [r.clip_id for r in built] == [rows[i].videoid for i in (0, 1, 4, 5)]


def test_webvid_official_layout_comes_before_the_mirror_layout(webvid_root: Path) -> None:
    rows = W.webvid_rows("train", 2)
    W.write_metadata(webvid_root / "results_2M_train.csv", rows)
    W.touch_videos(webvid_root, rows)
    train = build_webvid(_video(webvid_root), DataConfig(), split="train", max_samples=0)
    assert train == [_official_row(webvid_root, row) for row in rows]
    # No official val metadata: validation still reads the mirror layout.
    val = build_webvid(_video(webvid_root), DataConfig(), split="validation", max_samples=0)
    assert [r.caption for r in val] == ["val one", "val two"]


@pytest.mark.parametrize(
    ("names", "listed"),
    [
        (["results_10M_train.csv", "results_2M_train.csv"], "results_10M_train.csv, results_2M_train.csv"),
        (
            ["results_2M_train_2/0.csv", "results_2M_train_4/0.csv"],
            "results_2M_train_2/, results_2M_train_4/",
        ),
        (["results_2M_train_2/0.csv", "results_10M_train.csv"], "results_2M_train_2/, results_10M_train.csv"),
    ],
)
def test_webvid_refuses_a_folder_holding_the_metadata_of_several_corpora(
    tmp_path: Path, names: list[str], listed: str
) -> None:
    for name in names:
        W.write_metadata(tmp_path / name, W.webvid_rows("train", 1))
    W.write_metadata(tmp_path / "results_2M_val.csv", W.webvid_rows("validation", 1))  # not train's
    message = (
        f"webvid: {tmp_path} holds the train metadata of several corpora ({listed}); keep one per "
        "video.data_root folder (reading them all lists a video twice where they overlap)"
    )
    with pytest.raises(ValueError) as err:
        build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=0)
    assert str(err.value) == message


def test_webvid_official_cap_stops_reading_early(tmp_path: Path) -> None:
    folder = tmp_path / "results_2M_train_2"
    W.write_metadata(folder / "0.csv", W.webvid_rows("train", 2))
    W.touch_videos(tmp_path, W.webvid_rows("train", 3))
    with open(folder / "0.csv", "a") as handle:  # past the cap: a broken row, then garbage
        handle.write(",,,,\x00broken\n" + "garbage\n" * 1000)
    (folder / "1.csv").write_text("not,the,right,header\n")
    rows = build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=2)
    assert [r.clip_id for r in rows] == ["1000000", "1000001"]
    with pytest.raises(ValueError, match=r"0\.csv line 4: empty videoid$"):
        build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=3)


@pytest.mark.parametrize(("split", "folder"), [("train", "train"), ("validation", "val")])
def test_webvid_without_metadata_says_every_glob_it_looked_for_in_the_order_tried(
    tmp_path: Path, split: str, folder: str
) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / f"results_2M_{folder}_2").mkdir()  # a partition folder without CSVs holds none
    (tmp_path / "results_2M_test.csv").write_text("videoid,page_dir,name\n")  # no such split
    with pytest.raises(FileNotFoundError) as err:
        build_webvid(_video(tmp_path), DataConfig(), split=split, max_samples=0)
    assert str(err.value) == (
        f"webvid: no {split} metadata CSV in video.data_root='{tmp_path}': looked for "
        f"{tmp_path}/results_*_{folder}_*/*.csv, {tmp_path}/results_*_{folder}.csv, "
        f"{tmp_path}/raw/webvid-10M/data/{folder}/partitions/*.csv"
    )


@pytest.mark.parametrize(
    ("name", "why"), [("nowhere", "no such folder"), ("results_2M_train.csv", "not a folder")]
)
def test_webvid_data_root_that_is_no_folder_is_named_as_such(tmp_path: Path, name: str, why: str) -> None:
    W.write_metadata(tmp_path / "results_2M_train.csv", W.webvid_rows("train", 1))
    root = tmp_path / name
    with pytest.raises(FileNotFoundError) as err:
        build_webvid(_video(root), DataConfig(), split="train", max_samples=0)
    where = f"video.data_root='{root}' ({why})"
    assert str(err.value).startswith(f"webvid: no train metadata CSV in {where}: looked for {root}/results_")


def test_webvid_official_wrong_columns_name_the_file_and_the_columns_found_and_expected(
    tmp_path: Path,
) -> None:
    bad = W.write_metadata(
        tmp_path / "results_2M_train.csv", W.webvid_rows("train", 1), header=("videoid", "contentUrl", "name")
    )
    with pytest.raises(ValueError) as err:
        build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=0)
    assert str(err.value) == (
        f"webvid: {bad} lacks column(s) ['page_dir']: found ['videoid', 'contentUrl', 'name'], "
        "expected at least ['videoid', 'page_dir', 'name']"
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('1000001,u,PT00H00M01S,,"a caption"', "line 3: empty page_dir"),
        ('  ,u,PT00H00M01S,000001_000003,"a caption"', "line 3: empty videoid"),
        ('1000001,u,PT00H00M01S,../../etc,"a caption"', "line 3: invalid page_dir '../../etc'"),
        ("1000001,u,PT00H00M01S,000001_000003", "line 3: no name (caption) field"),
    ],
)
def test_webvid_official_bad_rows_name_the_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = W.write_metadata(tmp_path / "results_2M_val.csv", W.webvid_rows("validation", 1))
    with open(path, "a") as handle:
        handle.write(row + "\n")
    with pytest.raises(ValueError) as err:
        build_webvid(_video(tmp_path), DataConfig(), split="validation", max_samples=0)
    assert str(err.value) == f"webvid: {path} {message}"


def test_webvid_leaves_out_rows_never_downloaded_counting_them_once_without_a_stat_per_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download is always partial: rows without their video are left out and counted (one
    listing per page_dir folder, no stat of any clip), and the cap counts the rows kept."""
    rows = W.webvid_rows("train", 7)  # page_dirs of 3 clips: 3 + 3 + 1
    W.write_metadata(tmp_path / "results_2M_train.csv", rows)
    W.touch_videos(tmp_path, [rows[i] for i in (0, 2, 3, 6)])
    looked_at: list[str] = []
    real_stat, real_listdir = os.stat, os.listdir
    listed: list[str] = []

    def spy_stat(path, *args, **kwargs):
        looked_at.append(str(path))
        return real_stat(path, *args, **kwargs)

    def spy_listdir(path="."):
        listed.append(str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "stat", spy_stat)
    monkeypatch.setattr(os, "listdir", spy_listdir)
    built: Any = build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=0)
    assert [r.clip_id for r in built] == [rows[i].videoid for i in (0, 2, 3, 6)]
    assert built.left_out == {"missing": 3}
    assert not [path for path in looked_at if path.endswith(".mp4")]
    assert len([path for path in listed if "/videos/" in path]) == 3  # one listing per page_dir
    capped: Any = build_webvid(_video(tmp_path), DataConfig(), split="train", max_samples=2)
    assert [r.clip_id for r in capped] == [rows[0].videoid, rows[2].videoid]
    assert capped.left_out == {"missing": 1}


# --------------------------------------------------------------------------- manifest


def _jsonl(path: Path, records: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_manifest_jsonl_relative_paths_and_segments(tmp_path: Path) -> None:
    manifest = _jsonl(
        tmp_path / "lists" / "clips.jsonl",
        [
            {"path": "a.mp4", "caption": "cap a"},
            "",  # blank lines are skipped
            {"path": "../videos/b.mp4", "caption": "cap b", "start": 1.5, "end": 3, "id": "b-seg"},
            {"path": "/abs/c.mp4", "caption": "cap c", "start": None, "end": 2.0},
        ],
    )
    rows = build_manifest(_video(manifest), DataConfig(), split="train", max_samples=0)
    assert rows == [
        ClipRow(str(tmp_path / "lists" / "a.mp4"), "cap a", None, None, "clips.jsonl:1"),
        ClipRow(str(tmp_path / "videos" / "b.mp4"), "cap b", 1.5, 3.0, "b-seg"),
        ClipRow("/abs/c.mp4", "cap c", None, 2.0, "clips.jsonl:4"),
    ]


def test_manifest_csv_with_empty_optional_cells(tmp_path: Path) -> None:
    manifest = tmp_path / "clips.csv"
    manifest.write_text('path,caption,start,end\nv/a.mp4,"a, quoted caption",,\nb.mp4,cap b,0.5,2.5\n')
    rows = build_manifest(_video(manifest), DataConfig(), split="validation", max_samples=0)
    assert rows == [
        ClipRow(str(tmp_path / "v" / "a.mp4"), "a, quoted caption", None, None, "clips.csv:2"),
        ClipRow(str(tmp_path / "b.mp4"), "cap b", 0.5, 2.5, "clips.csv:3"),
    ]


def test_manifest_folder_picks_split_file(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", [{"path": "t.mp4", "caption": "train"}])
    (tmp_path / "val.csv").write_text("path,caption\nv.mp4,val\n")
    train = build_manifest(_video(tmp_path), DataConfig(), split="train", max_samples=0)
    val = build_manifest(_video(tmp_path), DataConfig(), split="validation", max_samples=0)
    assert [r.caption for r in train] == ["train"] and [r.caption for r in val] == ["val"]
    (tmp_path / "val.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"without a validation manifest .*validation.jsonl"):
        build_manifest(_video(tmp_path), DataConfig(), split="validation", max_samples=0)


def test_manifest_cap_stops_reading_early(tmp_path: Path) -> None:
    manifest = _jsonl(tmp_path / "m.jsonl", [{"path": "a.mp4", "caption": "a"}, "{not json"])
    rows = build_manifest(_video(manifest), DataConfig(), split="train", max_samples=1)
    assert len(rows) == 1
    with pytest.raises(ValueError, match=r"m.jsonl line 2: invalid JSON"):
        build_manifest(_video(manifest), DataConfig(), split="train", max_samples=0)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"caption": "no path"}, "missing required key 'path'"),
        ({"path": "a.mp4"}, "missing required key 'caption'"),
        ({"path": "a.mp4", "caption": "x", "start": "soon"}, "start must be a number of seconds"),
        ({"path": "a.mp4", "caption": "x", "start": 2, "end": 2}, r"start \(2.0\) must be < end \(2.0\)"),
        ({"path": "a.mp4", "caption": "x", "start": 3, "end": 1}, r"start \(3.0\) must be < end \(1.0\)"),
        ({"path": "a.mp4", "caption": "x", "start": -1}, "start must be >= 0"),
        ({"path": "a.mp4", "caption": 7}, "'caption' must be a string"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_manifest_bad_rows_name_file_and_line(tmp_path: Path, record: object, message: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "ok.mp4", "caption": "ok"}) + "\n\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=rf"manifest {manifest} line 3: {message}"):
        build_manifest(_video(manifest), DataConfig(), split="train", max_samples=0)


def test_manifest_csv_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,text\na.mp4,x\n")
    with pytest.raises(
        ValueError, match=r"m.csv lacks column\(s\) \['path', 'caption'\]: found \['file', 'text'\]"
    ):
        build_manifest(_video(manifest), DataConfig(), split="train", max_samples=0)
    manifest.write_text("path,caption,start,end\na.mp4,x,1,2\nb.mp4,y,1,zz\n")
    with pytest.raises(ValueError, match=r"m.csv line 3: end must be a number of seconds \(got 'zz'\)"):
        build_manifest(_video(manifest), DataConfig(), split="train", max_samples=0)


def test_manifest_root_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^video.data_root must be set for dataset_type=manifest"):
        build_manifest(_video(""), DataConfig(), split="train", max_samples=0)
    with pytest.raises(FileNotFoundError, match="no such manifest file or folder"):
        build_manifest(_video(tmp_path / "nope.jsonl"), DataConfig(), split="train", max_samples=0)
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match=r"a manifest file must be \.jsonl or \.csv"):
        build_manifest(_video(tmp_path / "m.txt"), DataConfig(), split="train", max_samples=0)


def test_module_is_light_at_import() -> None:
    """Config validation imports this module: no torch/numpy/av/decord at import time."""
    import subprocess
    import sys

    code = (
        "import sys, kvideo.data.datasets\n"
        "heavy = [m for m in ('torch', 'numpy', 'av', 'decord') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manifest_jsonl_and_csv_accept_a_utf8_bom(tmp_path: Path) -> None:
    """Spreadsheet and Windows tools put a UTF-8 BOM before the first line; the CSV reader always
    accepted one, and a JSONL manifest must too (``json.loads`` refuses a leading U+FEFF)."""
    bom = "\ufeff"
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text(bom + json.dumps({"path": "a.mp4", "caption": "cap a"}) + "\n", encoding="utf-8")
    csv_file = tmp_path / "bom.csv"
    csv_file.write_text(bom + "path,caption\nb.mp4,cap b\n", encoding="utf-8")
    for manifest, expected in ((jsonl, ("a.mp4", "cap a")), (csv_file, ("b.mp4", "cap b"))):
        rows = build_manifest(_video(manifest), DataConfig(), split="train", max_samples=0)
        assert [(os.path.basename(r.path), r.caption) for r in rows] == [expected]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "deep.jsonl",
            b'{"path": "a.mp4", "caption": "x"}\n' + b"[" * 200_000 + b"]" * 200_000 + b"\n",
            r"deep.jsonl line 2: JSON nested too deeply to read$",
        ),
        (
            "utf16.jsonl",
            json.dumps({"path": "a.mp4", "caption": "x"}).encode("utf-16"),
            r"utf16.jsonl is UTF-16 text: kvideo reads UTF-8 \(save the file as UTF-8\)$",
        ),
        (
            "latin1.csv",
            "path,caption\na.mp4,ok\nb.mp4,caf\u00e9 au lait\n".encode("latin-1"),
            r"latin1.csv line 3: not UTF-8 text \(byte 0xe9\): save the file as UTF-8$",
        ),
    ],
)
def test_a_manifest_python_cannot_read_is_one_line_naming_the_file(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    manifest = tmp_path / name
    manifest.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^manifest {manifest}{message[len(name) :]}") as err:
        build_manifest(_video(manifest), DataConfig(), split="train", max_samples=0)
    assert "\n" not in str(err.value)


def test_a_conversations_list_nested_too_deeply_names_the_file(tmp_path: Path) -> None:
    from kvideo.data.datasets.conversations import build_conversations

    path = tmp_path / "conv.json"
    path.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(ValueError, match=rf"^conversations {path}: JSON nested too deeply to read$"):
        build_conversations(_video(path), DataConfig(), split="train", max_samples=0)


def test_a_webvid_caption_over_the_csv_default_limit_is_read(tmp_path: Path) -> None:
    """The csv module refuses a field over 128 KiB, which refused a whole corpus for one long
    caption; kvideo reads up to 16 MiB and names the line past that."""
    long_caption = "a red circle " * 12_000  # 156 KB
    rows = W.webvid_rows("validation", 2)
    rows[1] = dataclasses.replace(rows[1], caption=long_caption)
    path = W.write_metadata(tmp_path / "results_2M_val.csv", rows)
    W.touch_videos(tmp_path, rows)
    got = build_webvid(_video(tmp_path), DataConfig(), split="validation", max_samples=0)
    assert [r.caption for r in got] == [rows[0].caption, long_caption]
    with open(path, "a") as handle:
        handle.write(f'1000001,u,PT00H00M01S,000001_000003,"{"x" * (17 * 1024 * 1024)}"\n')
    with pytest.raises(ValueError, match=rf"^webvid: {path} line 4: field larger than field limit"):
        build_webvid(_video(tmp_path), DataConfig(), split="validation", max_samples=0)
