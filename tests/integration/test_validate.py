"""``kvideo-validate`` (``python -m kvideo.validate``): every file of a configured split is probed
(good ones with their media facts, bad ones with their training skip reason), hangs and crashes
are contained, and the blocklist it writes makes the dataset mask those rows as ``blocklisted``
without opening them. The config tree is found from the flag, the environment, ``./conf`` or the
repository beside the package."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from kvideo.config.compose import ConfigDirNotFound, find_config_dir
from kvideo.data.blocklist import BLOCKLIST_NAME
from kvideo.data.settings import ClipSettings
from kvideo.decode import DecodeError
from kvideo.registry import DECODERS
from kvideo.tools.probe_pool import probe_all
from kvideo.tools.validate import REPORT_NAME, SUMMARY_NAME, main, scan_config
from tests.helpers import hostile as H
from tests.helpers import videos as V
from tests.helpers import webvid as W
from tests.helpers.cli import run_module
from tests.helpers.paths import REPO

TIMEOUT = "1.5"
NARROW = [(1, 1), (2, 2), (32, 32), (96, 16)]
OPENED: list[str] = []  # paths the spy decoder was asked to decode


def _spy_decoder(cfg, *, local_rank: int = 0):
    """decord_cpu that records every path it is asked to decode (in this process); registered
    as ``spy_cpu`` only for the test that uses it."""
    from kvideo.decode.decord_decoder import make_cpu_decoder

    inner = make_cpu_decoder(num_threads=cfg.num_threads, timeout_s=cfg.timeout_s)

    class Spy:
        def decode(self, path, sample, **kwargs):
            OPENED.append(str(path))
            return inner.decode(path, sample, **kwargs)

    return Spy()


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory):
    """Hostile corpus + 3 good clips behind a manifest (one path listed twice), validated once;
    plus bad files whose names end in a space or hold a newline, each beside a good twin."""
    root = tmp_path_factory.mktemp("validate")
    cases = H.build_hostile_corpus(root / "videos")
    good = [H.make_good(root / "videos" / f"good_{i}.mp4", i) for i in range(3)]
    # Widths decord cannot copy out on some CPU (1, 2, 32, 96): training reads them, so must validate.
    narrow = [V.make_odd_size(root / "videos" / f"w{w}.mp4", width=w, height=h) for w, h in NARROW]
    odd = H.make_odd_names(root / "videos")
    paths = [c.path for c in cases] + good + narrow + [c.path for c in odd] + [good[0]]
    manifest = root / "train.jsonl"
    lines = (json.dumps({"path": p, "caption": f"clip {i}"}) + "\n" for i, p in enumerate(paths))
    manifest.write_text("".join(lines))
    out = root / "report"
    code = main(
        [
            "video/dataset=manifest",
            f"video.data_root={manifest}",
            "--out",
            str(out),
            "--workers",
            "2",
            "--timeout",
            TIMEOUT,
            "--no-progress",
            "--frames",
            "4",  # 4: sees the corrupt middle
        ]
    )
    yield {
        "root": root,
        "cases": cases,
        "good": good,
        "narrow": narrow,
        "odd": odd,
        "manifest": manifest,
        "out": out,
        "code": code,
    }
    H.release_hangs(root)
    for case in cases:
        if os.path.isfile(case.path):
            os.chmod(case.path, 0o600)


def test_report_has_one_record_per_distinct_file(scanned) -> None:
    assert scanned["code"] == 0
    records = [json.loads(line) for line in (scanned["out"] / REPORT_NAME).read_text().splitlines()]
    by_path = {r["path"]: r for r in records}
    files = len(scanned["cases"]) + len(scanned["good"]) + len(NARROW) + len(scanned["odd"])
    assert len(by_path) == len(records) == files
    assert sorted(r["index"] for r in records) == list(range(len(records)))
    for case in scanned["cases"] + scanned["odd"]:
        r = by_path[case.path]
        outcome = None if r["ok"] else r["reason"]
        assert case.accepts(outcome), (case.name, r)
    for path in scanned["good"]:
        r = by_path[path]
        assert r["ok"] and r["reason"] is None
        assert (r["codec"], r["width"], r["height"], r["num_frames"]) == ("h264", 64, 48, 10)
        assert r["fps"] == pytest.approx(10.0) and r["duration"] == pytest.approx(1.0)
    vp8 = by_path[next(c.path for c in scanned["cases"] if c.name == "vp8_webm")]
    assert vp8["codec"] == "vp8"
    for path, (w, h) in zip(scanned["narrow"], NARROW, strict=True):
        r = by_path[path]
        assert r["ok"] and (r["width"], r["height"], r["num_frames"]) == (w, h, 25), r
    # A 3 s stream-copy cut at 1.32 s: 42 frames over 1.68 s are shown, not the 75 in the file.
    cut = by_path[next(c.path for c in scanned["cases"] if c.name == "stream_copy_cut")]
    assert cut["ok"] and cut["num_frames"] == 42 and cut["duration"] == pytest.approx(1.68)


def test_summary_counts_and_blocklist_agree_with_the_report(scanned) -> None:
    records = [json.loads(line) for line in (scanned["out"] / REPORT_NAME).read_text().splitlines()]
    bad = sorted(r["path"] for r in records if not r["ok"])
    summary = json.loads((scanned["out"] / SUMMARY_NAME).read_text())
    counts: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    assert summary["reasons"] == counts and summary["bad"] == len(bad)
    assert summary["rows"] == len(records) + 1  # the duplicated row is probed once
    assert counts["timeout"] == 1  # the ffconcat -> FIFO file, killed with its worker
    lines = (scanned["out"] / BLOCKLIST_NAME).read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#") and "data.blocklist=" in lines[0] and lines[-1] == ""
    reasons = {r["path"]: r["reason"] for r in records if not r["ok"]}
    assert [json.loads(line) for line in lines[1:-1]] == [{"path": p, "reason": reasons[p]} for p in bad]


def test_blocklist_keeps_names_with_a_trailing_space_or_a_newline(scanned) -> None:
    """One path per line loses these names: ``strip()`` turns ``"twin.mp4 "`` into the good
    ``"twin.mp4"`` and a newline splits a name in two. JSON lines keep every name exactly."""
    from kvideo.data.blocklist import read_blocklist

    blocked = read_blocklist(str(scanned["out"] / BLOCKLIST_NAME))
    records = [json.loads(line) for line in (scanned["out"] / REPORT_NAME).read_text().splitlines()]
    assert blocked == {r["path"] for r in records if not r["ok"]}
    for case in scanned["odd"]:
        assert (case.path in blocked) == (case.expect is not None), case.name


def test_blocklisted_rows_are_masked_and_never_opened(scanned, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvideo.data.blocklist import read_blocklist
    from kvideo.data.loader import build_dataset
    from kvideo.data.tokenizer import build_tokenizer

    monkeypatch.setitem(DECODERS._entries, "spy_cpu", _spy_decoder)  # removed again after the test
    blocklist = scanned["out"] / BLOCKLIST_NAME
    cfg = scan_config(
        [
            "video/dataset=manifest",
            f"video.data_root={scanned['manifest']}",
            f"data.blocklist={blocklist}",
            "decoder.name=spy_cpu",
            f"decoder.timeout_s={TIMEOUT}",
            "video.frame_size=32",
            "video.max_frames=4",
            "model.tokens_per_frame=4",
            "video.min_frames=2",
        ]
    )
    ds = build_dataset(ClipSettings.of(cfg), split="train", tokenizer=build_tokenizer(cfg.data))
    blocked = read_blocklist(str(blocklist))
    assert {c.path for c in scanned["odd"] if c.expect} <= blocked
    OPENED.clear()
    for i in range(len(ds)):
        item = ds[i]
        if item["path"] in blocked:
            assert item["skip_reason"] == "blocklisted" and not item["frame_mask"].any()
        else:
            assert item["skip_reason"] == "", item["path"]  # validate's "ok" is training's "ok"
    assert not set(OPENED) & blocked
    assert set(OPENED) == {r.path for r in ds.rows} - blocked


def test_a_probe_that_crashes_its_worker_is_reported_and_the_scan_goes_on(
    scanned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers are forked, so a patched Prober reaches them: SIGSEGV on one path stands in for an
    FFmpeg crash (the supervisor sees a dead process, whatever killed it)."""
    import kvideo.tools.probe

    real = kvideo.tools.probe.Prober.probe

    def probe(self, path: str):
        if path.endswith("crash.mp4"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(self, path)

    monkeypatch.setattr(kvideo.tools.probe.Prober, "probe", probe)
    good = scanned["good"]
    paths = [good[0], str(scanned["root"] / "crash.mp4"), good[1], good[2]]
    records = {r["index"]: r for r in probe_all(paths, workers=1, timeout_s=30)}
    assert sorted(records) == [0, 1, 2, 3]
    assert records[1]["reason"] == "decode_error" and "SIGSEGV" in records[1]["detail"]
    assert all(records[i]["ok"] for i in (0, 2, 3))  # the rest of the crashed worker's chunk was requeued


def test_cli_refuses_a_bad_config_before_scanning(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_module("kvideo.validate", "video.fps=0", "--out", str(out), cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "video.fps must be positive (got 0.0)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_scans_a_bare_folder_of_clips_recursively_and_a_single_file(tmp_path: Path) -> None:
    """The first thing a user tries: it used to be a Hydra grammar error."""
    clips = tmp_path / "my clips"
    (clips / "deeper").mkdir(parents=True)
    good = [H.make_good(clips / "a.mp4", 0), H.make_good(clips / "deeper" / "b.MKV.mp4", 1)]
    bad = clips / "deeper" / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    (clips / "notes.txt").write_text("not a clip")
    picture = clips / "deeper" / "still.png"
    Image.new("RGB", (40, 24), (200, 10, 10)).save(picture)  # probed as training reads it: one frame
    good.append(str(picture))
    (clips / "loop").symlink_to(clips, target_is_directory=True)  # never followed
    out = tmp_path / "report"
    result = run_module(
        "kvideo.validate", str(clips), "--out", str(out), "--no-progress", "--frames", "2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("kvideo.validate: 4 files (4 rows) in ")
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert (summary["ok"], summary["bad"], summary["dataset_type"]) == (3, 1, "files")
    records = {r["path"]: r for r in map(json.loads, (out / REPORT_NAME).read_text().splitlines())}
    assert set(records) == {str(Path(g).resolve()) for g in good} | {str(bad.resolve())}
    assert str(bad.resolve()) in (out / BLOCKLIST_NAME).read_text()
    one = run_module(
        "kvideo.validate", str(good[0]), "--out", str(tmp_path / "one"), "--no-progress", cwd=tmp_path
    )
    assert one.returncode == 0 and one.stdout.startswith("kvideo.validate: 1 files (1 rows) in ")
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run_module("kvideo.validate", str(empty), "--out", str(tmp_path / "none"), cwd=tmp_path)
    assert none.returncode == 2 and none.stderr.startswith(f"kvideo.validate: no video files in {empty} ")
    assert ".png" in none.stderr  # pictures are looked for too


def test_cli_refuses_an_out_folder_under_a_regular_file_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    clip = H.make_good(tmp_path / "a.mp4", 0)
    result = run_module("kvideo.validate", str(clip), "--out", str(tmp_path / "file" / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"kvideo.validate: --out {tmp_path / 'file' / 'out'}: cannot be a folder"
    )
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- WebVid, official download


def test_cli_validates_an_official_webvid_download_and_counts_the_video_never_downloaded(
    tmp_path: Path,
) -> None:
    root, out = tmp_path / "webvid", tmp_path / "report"
    never = W.webvid_rows("train", 5)[3]
    W.write_official_webvid(root, train=5, val=1, train_partitions=2, missing={never.videoid})
    args = ["video/dataset=webvid", f"video.data_root={root}", "--out", str(out), "--workers", "1"]
    result = run_module("kvideo.validate", *args, "--no-progress", "--frames", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.match(
        rf"kvideo\.validate: 4 files \(4 rows, 1 more rows left out at listing \(missing\)\) in [\d.]+s: "
        rf"4 ok, 0 bad \(none\); report in {out}/",
        result.stdout,
    ), result.stdout
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert (summary["ok"], summary["bad"], summary["left_out"]) == (4, 0, {"missing": 1})
    records = [json.loads(line) for line in (out / REPORT_NAME).read_text().splitlines()]
    assert str(never.video(root)) not in {r["path"] for r in records}


def test_cli_names_every_glob_it_looked_for_when_a_webvid_folder_has_no_metadata(tmp_path: Path) -> None:
    root = tmp_path / "webvid"
    root.mkdir()
    args = ["video/dataset=webvid", f"video.data_root={root}", "video.split=validation"]
    result = run_module("kvideo.validate", *args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kvideo.validate: cannot read the dataset: webvid: no validation metadata CSV in "
        f"video.data_root='{root}': looked for {root}/results_*_val_*/*.csv, {root}/results_*_val.csv, "
        f"{root}/raw/webvid-10M/data/val/partitions/*.csv"
    )
    assert not (tmp_path / "out").exists()


def test_probe_all_with_no_paths_yields_nothing() -> None:
    assert list(probe_all([], workers=2, timeout_s=1)) == []


def test_decode_error_type_is_the_training_one() -> None:
    # The report's reasons are SKIP_REASONS: same vocabulary as metrics.jsonl / skipped.jsonl.
    from kvideo.decode.errors import SKIP_REASONS

    assert DecodeError("timeout", "x").reason in SKIP_REASONS


# ----------------------------------------------------------------------------- the config tree


def _tree(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("defaults: []\n")
    return folder


def test_the_config_tree_is_the_flag_then_the_environment_then_cwd_conf_then_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag, env, cwd = _tree(tmp_path / "flag"), _tree(tmp_path / "env"), tmp_path / "work"
    _tree(cwd / "conf")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("KVIDEO_CONFIG_DIR", str(env))
    assert find_config_dir(flag) == flag
    assert find_config_dir() == env
    monkeypatch.delenv("KVIDEO_CONFIG_DIR")
    assert find_config_dir() == cwd / "conf"
    monkeypatch.chdir(tmp_path)  # no ./conf here: the checkout's conf/ beside the package
    assert find_config_dir() == REPO / "conf"


@pytest.mark.parametrize("source", ["--config-dir", "$KVIDEO_CONFIG_DIR"])
def test_a_named_config_tree_without_config_yaml_is_an_error_not_a_fallback(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(REPO)  # ./conf exists here and must not be used instead
    if source == "--config-dir":
        monkeypatch.delenv("KVIDEO_CONFIG_DIR", raising=False)
        call = lambda: find_config_dir(empty)  # noqa: E731
    else:
        monkeypatch.setenv("KVIDEO_CONFIG_DIR", str(empty))
        call = find_config_dir
    expected = rf"^{re.escape(source)} {re.escape(str(empty))} holds no config\.yaml; pass --config-dir DIR"
    with pytest.raises(ConfigDirNotFound, match=expected):
        call()


def test_with_no_config_tree_anywhere_the_error_lists_the_places_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed without the repository (a wheel): no conf/ beside the package."""
    import kvideo.config.compose

    monkeypatch.setattr(kvideo.config.compose, "REPO_CONFIG_DIR", tmp_path / "site-packages" / "conf")
    monkeypatch.delenv("KVIDEO_CONFIG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigDirNotFound) as err:
        find_config_dir()
    message = str(err.value)
    assert "\n" not in message
    assert f"./conf ({tmp_path}/conf)" in message and str(tmp_path / "site-packages" / "conf") in message
    assert "pass --config-dir DIR" in message


def test_cli_names_a_config_dir_without_config_yaml_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kvideo.validate", "--config-dir", str(tmp_path), "--out", str(tmp_path)]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kvideo.validate: --config-dir {tmp_path} holds no config.yaml; pass --config-dir DIR "
        "(or set KVIDEO_CONFIG_DIR=DIR) with DIR the folder holding config.yaml"
    )


def test_installed_command_finds_the_config_tree_from_any_folder(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("kvideo-validate")
    if not script.is_file():
        pytest.skip("kvideo is not installed in this environment (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if k != "KVIDEO_CONFIG_DIR"}
    result = subprocess.run(
        [str(script), "video.fps=0", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    assert "video.fps must be positive (got 0.0)" in result.stderr  # composed from the repository's conf/


def test_parts_of_a_scan_cover_each_file_once_and_merge_into_the_whole_scan(tmp_path: Path) -> None:
    """``--part I/3`` three times (a SLURM array), then ``--merge``: the report, counts and
    blocklist of one scan of the whole folder; a part missing or given twice is refused."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(5):
        H.make_good(clips / f"good_{i}.mp4", i)
    for i in range(2):
        (clips / f"bad_{i}.mp4").write_bytes(b"not a video at all")
    common = [str(clips), "--no-progress", "--frames", "1", "--workers", "2"]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    parts = [tmp_path / f"part_{i}" for i in range(3)]
    for i, folder in enumerate(parts):
        assert main([*common, "--part", f"{i}/3", "--out", str(folder)]) == 0
    sizes = [json.loads((folder / SUMMARY_NAME).read_text())["files"] for folder in parts]
    assert sizes == [3, 2, 2]
    assert main(["--merge", *map(str, parts), "--out", str(tmp_path / "merged")]) == 0

    def reasons(folder: Path) -> dict[str, str]:
        records = map(json.loads, (folder / REPORT_NAME).read_text().splitlines())
        return {r["path"]: r["reason"] for r in records}

    assert reasons(tmp_path / "merged") == reasons(tmp_path / "whole")
    merged = json.loads((tmp_path / "merged" / SUMMARY_NAME).read_text())
    whole = json.loads((tmp_path / "whole" / SUMMARY_NAME).read_text())
    assert (merged["ok"], merged["bad"], merged["reasons"]) == (whole["ok"], whole["bad"], whole["reasons"])
    blocklist = (tmp_path / "merged" / BLOCKLIST_NAME).read_text()
    assert all(str((clips / f"bad_{i}.mp4").resolve()) in blocklist for i in range(2))

    missing = run_module(
        "kvideo.validate",
        "--merge",
        str(parts[0]),
        str(parts[2]),
        "--out",
        str(tmp_path / "m2"),
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and missing.stderr == "kvideo.validate: --merge: part(s) 1/3 missing\n"
    twice = run_module(
        "kvideo.validate",
        "--merge",
        *map(str, parts),
        str(parts[1]),
        "--out",
        str(tmp_path / "m3"),
        cwd=tmp_path,
    )
    assert twice.returncode == 2 and "part 1/3 is given twice" in twice.stderr
    bad_part = run_module("kvideo.validate", str(clips), "--part", "3/3", cwd=tmp_path)
    assert bad_part.returncode == 2 and "--part 3/3: I must be in 0..N-1" in bad_part.stderr
