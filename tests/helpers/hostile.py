"""A hostile video corpus, built by the tests (no binaries are checked in).

Why: decord and FFmpeg fail in many distinct ways (no moov, truncated mdat, an index that
promises more frames than exist, a file that blocks forever on open). Each case here is
a real file with the structural defect a crawled corpus contains, so the tests exercise
the real failure path, not a mock, and check that it maps to the right skip reason.

``build_hostile_corpus(root)`` writes every case under ``root`` and returns
``HostileCase``s; ``expect`` is the ``SKIP_REASONS`` entry the decoder must report, or
``None`` for files that must decode (seek-accuracy, short and oddly-timed clips).

MP4 surgery works on the ISO-BMFF box tree (``iter_boxes``/``find_box``): the
over-reporting file edits the ``stts`` sample count (FFmpeg's ``nb_frames`` is the stts
total, while the demuxer's index only holds the ``stsz`` samples), the "4 hours" file
declares a 4 h ``mvhd``/``mdhd`` duration *and* really has a frame at 4 h, and "no moov"
renames the ``moov`` box to ``junk`` so the file keeps its size but loses its index (not
``free``: FFmpeg looks inside ``free`` boxes for a hidden moov and would find it).

What decord2 3.4 does with the "over-reporting" files (measured, and asserted by
``tests/integration/test_hostile_corpus.py``): its ``len()`` is clamped to the packets the demuxer
really indexed, so the stts-inflated MP4 (FFmpeg ``nb_frames`` 210, 10 real frames) reports
10 and decodes. The file that genuinely over-reports to decord is the faststart MP4 cut in
the middle of its ``mdat``: ``len()`` counts the packet the cut runs through (9) while only
8 frames decode. decord alone salvages the surviving prefix or gives up with ``decode_error``
(a race in its packet read-ahead, measured: same file, same process, either outcome), so
``decord_cpu`` hands such a clip to PyAV, whose tail guard salvages the same prefix every time.
"""

from __future__ import annotations

import os
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from tests.helpers import videos as V

# Good clips are encoded at this size and rate: small enough for 2 cores, big enough that the
# frame index bands of ``tests.videos`` survive compression.
GOOD_SECONDS = 1.0
GOOD_FPS = 10
FOUR_HOURS = 4 * 3600.0
HANG_SEGMENT = "hang_segment"  # FIFO name referenced by the ffconcat "hang" file


@dataclass(frozen=True)
class HostileCase:
    """One corpus entry. ``expect`` None = must decode; ``check`` names an extra assertion
    the dataset-level test runs on decodable files (``"pyav"``: frames equal an independent
    PyAV decode; ``"short"``: fewer real frames than requested; ``"long"``: a 4 h timeline)."""

    name: str
    path: str
    expect: str | None
    check: str = ""
    why: str = ""

    def accepts(self, outcome: str | None) -> bool:
        return outcome == self.expect


# ----------------------------------------------------------------------------- MP4 boxes

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta"}


def iter_boxes(
    data: bytes | bytearray, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int, int]]:
    """``(type, box_offset, payload_offset, box_end)`` of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos, pos + header, min(pos + size, end)
        pos += size


def find_box(data: bytes | bytearray, path: str) -> tuple[int, int, int]:
    """``(box_offset, payload_offset, box_end)`` of the first box at ``path`` ("moov/trak/mdia")."""
    start, end = 0, len(data)
    found: tuple[int, int, int] | None = None
    for part in path.split("/"):
        found = None
        for kind, off, payload, box_end in iter_boxes(data, start, end):
            if kind == part.encode():
                found = (off, payload, box_end)
                break
        if found is None:
            raise KeyError(f"no {path!r} box (missing {part!r})")
        start, end = found[1], found[2]
    assert found is not None
    return found


def _set_duration(data: bytearray, box: str, value_fn: Callable[[int], int]) -> None:
    """Rewrite the duration of an mvhd/mdhd box to ``value_fn(timescale)`` (v0 or v1 layout:
    version+flags, creation, modification, timescale, duration)."""
    _, payload, _ = find_box(data, box)
    if data[payload] == 1:
        timescale = struct.unpack_from(">I", data, payload + 20)[0]
        struct.pack_into(">Q", data, payload + 24, value_fn(timescale))
    else:
        timescale = struct.unpack_from(">I", data, payload + 12)[0]
        struct.pack_into(">I", data, payload + 16, min(0xFFFFFFFF, value_fn(timescale)))


# ----------------------------------------------------------------------------- makers


def make_truncated_mid_mdat(src: str, path: Path, *, keep: float = 0.5) -> str:
    """A faststart MP4 cut ``keep`` of the way into its ``mdat`` payload: the index (moov,
    first) still lists every sample, the data after the cut is gone (interrupted download)."""
    data = Path(src).read_bytes()
    _, payload, end = find_box(data, "mdat")
    return V.write_bytes(path, data[: payload + int((end - payload) * keep)])


def make_moov_missing(src: str, path: Path) -> str:
    """The same bytes with the ``moov`` box renamed to ``junk``: no index at all."""
    data = bytearray(Path(src).read_bytes())
    off, _, _ = find_box(data, "moov")
    data[off + 4 : off + 8] = b"junk"
    return V.write_bytes(path, bytes(data))


def make_over_reporting(src: str, path: Path, *, extra: int = 200) -> str:
    """The ``stts`` table claims ``extra`` more frames than ``stsz`` (and the data) holds.
    decord's ``len()`` reports the stts total, so a naive reader asks for frames that do
    not exist (decord's known hang/crash on over-reporting containers)."""
    data = bytearray(Path(src).read_bytes())
    _, payload, _ = find_box(data, "moov/trak/mdia/minf/stbl/stts")
    (entries,) = struct.unpack_from(">I", data, payload + 4)
    last = payload + 8 + 8 * (entries - 1)
    (count,) = struct.unpack_from(">I", data, last)
    struct.pack_into(">I", data, last, count + extra)
    return V.write_bytes(path, bytes(data))


def make_four_hours(path: Path, *, width: int = 64, height: int = 48) -> str:
    """Two frames, at 0 s and at 4 h (a camera left on pause), with every header duration
    saying 4 h: tiny on disk, enormous on the timeline. Sampling must not decode 4 h of
    video or allocate per-second buffers."""
    tb = Fraction(1, 1000)
    out = V._encode(
        path,
        [0, round(FOUR_HOURS * 1000)],
        tb,
        codec="libx264",
        width=width,
        height=height,
        rate=1,
        gop=250,
    )
    data = bytearray(Path(out).read_bytes())
    _set_duration(data, "moov/mvhd", lambda ts: round((FOUR_HOURS + 1) * ts))
    _set_duration(data, "moov/trak/mdia/mdhd", lambda ts: round((FOUR_HOURS + 1) * ts))
    return V.write_bytes(path, bytes(data))


def make_fifo(path: Path) -> str:
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return str(path)


def make_hanging(path: Path) -> str:
    """A regular, non-empty file that makes FFmpeg block forever, inside decord's C code.

    Its content is an ``ffconcat`` playlist (FFmpeg detects it by content, whatever the
    extension) whose only entry is a FIFO with no writer: opening the segment blocks in
    ``open(2)`` (kernel wait ``wait_for_partner``) until someone opens the FIFO for
    writing, i.e. forever. A bare FIFO would not do: the decoder's ``stat`` pre-check
    rejects it as ``not_a_file`` before decord sees it.
    """
    make_fifo(path.parent / HANG_SEGMENT)
    return V.write_bytes(path, f"ffconcat version 1.0\nfile {HANG_SEGMENT}\n".encode())


def release_hangs(root: Path) -> int:
    """Unblock every reader stuck on ``root``'s hang FIFOs (open for writing, close: the
    readers see EOF and fail normally). Returns how many FIFOs had a reader. Call at test
    teardown so no thread stays blocked in the test process."""
    released = 0
    for fifo in Path(root).rglob(HANG_SEGMENT):
        if not stat.S_ISFIFO(os.stat(fifo).st_mode):
            continue
        had_reader = False
        for _ in range(50):  # until nobody has it open for reading (ENXIO), at most ~0.5 s
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                break
            os.close(fd)
            had_reader = True
            time.sleep(0.01)
        released += had_reader
    return released


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def make_good(path: Path, index: int = 0) -> str:
    """A good H.264 clip (1 s at 10 fps, keyframe every 5 frames)."""
    return V.make_h264(path, seconds=GOOD_SECONDS, fps=GOOD_FPS, gop=5, width=64, height=48)


# ----------------------------------------------------------------------------- corpus


def build_hostile_corpus(root: Path, *, include_hang: bool = True) -> list[HostileCase]:
    """Write every hostile case under ``root``; return them in a stable order.

    ``include_hang`` adds the file that blocks forever: only for callers that run with a
    decode timeout and release it afterwards (``release_hangs``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    src = V.make_h264(root / "_src_plain.mp4", seconds=1.0, fps=10, gop=5)
    src_fast = V.make_h264(root / "_src_faststart.mp4", seconds=2.0, fps=10, gop=10, faststart=True)
    cases = [
        HostileCase("zero_byte", V.write_bytes(root / "zero_byte.mp4", b""), "empty"),
        HostileCase(
            "truncated_mid_mdat",
            make_truncated_mid_mdat(src_fast, root / "truncated_mdat.mp4"),
            None,
            check="salvaged",
            why="the demuxer counts the packet the cut runs through; the tail guard keeps the prefix "
            "(decord_cpu hands it to PyAV: decord's read-ahead thread made the outcome a race)",
        ),
        HostileCase(
            "truncated_in_first_frame",
            make_truncated_mid_mdat(src_fast, root / "truncated_first.mp4", keep=0.02),
            "unreadable",
            why="the cut runs through the first keyframe: no frame at all",
        ),
        HostileCase(
            "corrupt_nal_data",
            V.make_corrupt(src_fast, root / "corrupt.mp4"),
            "decode_error",
            why="index intact, NAL data overwritten with 0xFF",
        ),
        HostileCase(
            "truncated_plain",
            V.make_truncated(src, root / "truncated_plain.mp4", keep=0.5),
            "unreadable",
            why="moov at the end was cut off with the data",
        ),
        HostileCase("moov_missing", make_moov_missing(src, root / "moov_missing.mp4"), "unreadable"),
        HostileCase("audio_only", V.make_audio_only(root / "audio_only.mp4"), "no_video_stream"),
        HostileCase("text_as_mp4", V.make_text_as_video(root / "text.mp4"), "unreadable"),
        HostileCase(
            "over_reporting",
            make_over_reporting(src, root / "over_reporting.mp4"),
            None,
            check="over",
            why="stts claims 210 frames, 10 exist; decord2 clamps len() to its packet index",
        ),
        HostileCase(
            "vp8_webm",
            V.make_vp8_webm(root / "vp8.webm", seconds=2, fps=25, gop=10),
            None,
            check="pyav",
        ),
        HostileCase(
            "h264_bframes",
            V.make_h264(root / "bframes.mp4", seconds=2, fps=25, gop=12, bframes=True),
            None,
            check="pyav",
        ),
        HostileCase(
            "stream_copy_cut",
            V.make_stream_copy_cut(
                V.make_h264(root / "_src_cut.mp4", seconds=3, fps=25, gop=50, bframes=True),
                root / "stream_copy_cut.mp4",
                cut=1.32,
            ),
            None,
            check="pyav",
            why="edit list with 33 pre-roll frames a player never shows",
        ),
        HostileCase(
            "one_frame", V.make_h264(root / "one_frame.mp4", seconds=0.04, fps=25), None, check="short"
        ),
        HostileCase(
            "shorter_than_min_frames",
            V.make_h264(root / "short.mp4", seconds=0.3, fps=10, gop=5),
            None,
            check="short",
        ),
        HostileCase("four_hours", make_four_hours(root / "four_hours.mp4"), None, check="long"),
        HostileCase("missing_path", str(root / "does_not_exist.mp4"), "missing"),
        HostileCase("directory", _mkdir(root / "a_directory.mp4"), "not_a_file"),
        HostileCase("fifo", make_fifo(root / "fifo.mp4"), "not_a_file"),
        _unreadable_case(root, src),
    ]
    if include_hang:
        cases.append(HostileCase("hangs_forever", make_hanging(root / "hang.mp4"), "timeout"))
    return cases


def _mkdir(path: Path) -> str:
    path.mkdir(exist_ok=True)
    return str(path)


def _unreadable_case(root: Path, src: str) -> HostileCase:
    """chmod 000 copy of a good clip. root ignores file modes (CAP_DAC_OVERRIDE), so under
    root the file is readable and must decode; the dataset-level test then checks the
    "permission" reason in a child that drops to an unprivileged uid."""
    path = root / "no_permission.mp4"
    if path.exists():
        path.chmod(0o600)
    V.write_bytes(path, Path(src).read_bytes())
    path.chmod(0)
    if is_root():
        return HostileCase("no_permission", str(path), None, why="root: chmod 000 is still readable")
    return HostileCase("no_permission", str(path), "permission")


# ----------------------------------------------------------------------------- added helpers


def make_odd_names(root: Path) -> list[HostileCase]:
    """Files whose names a one-path-per-line list cannot hold, each with a good "twin" named
    what a line-reading blocklist turns the bad name into: ``"twin.mp4 "`` (trailing space,
    which ``strip()`` drops) beside a good ``"twin.mp4"``, and ``"line.mp4\\nbreak.mp4"`` (which
    splits into ``".../line.mp4"`` and ``"break.mp4"``) beside a good ``"line.mp4"``. A lossy blocklist
    then both opens the bad files and masks the good ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return [
        HostileCase("trailing_space", V.make_text_as_video(root / "twin.mp4 "), "unreadable"),
        HostileCase("trailing_space_twin", make_good(root / "twin.mp4"), None),
        HostileCase("newline_in_name", V.make_text_as_video(root / "line.mp4\nbreak.mp4"), "unreadable"),
        HostileCase("newline_in_name_twin", make_good(root / "line.mp4"), None),
    ]


def make_unknown_codec_tag(src: str, path: Path) -> str:
    """The MP4's video sample entry renamed from ``avc1`` to ``xxxx`` (one of the ways a fuzzed
    ``stsd`` breaks): the track is still a video track (``hdlr`` says ``vide``, PyAV lists it in
    ``streams.video``) but FFmpeg has no decoder for the codec, so decord says "cannot find
    video stream", as it does for an audio-only file."""
    data = bytearray(Path(src).read_bytes())
    _, payload, _ = find_box(data, "moov/trak/mdia/minf/stbl/stsd")
    entry = payload + 8  # version/flags, entry count, then the first sample entry's box
    assert data[entry + 4 : entry + 8] == b"avc1", bytes(data[entry : entry + 8])
    data[entry + 4 : entry + 8] = b"xxxx"
    return V.write_bytes(path, bytes(data))


def make_garbage_avcc(src: str, path: Path) -> str:
    """The H.264 decoder configuration (``avcC``: SPS/PPS) overwritten with 0xFF: the stream
    is there, its codec known, but no frame can be decoded from it."""
    data = bytearray(Path(src).read_bytes())
    _, payload, end = find_box(data, "moov/trak/mdia/minf/stbl/stsd")
    at = data.find(b"avcC", payload, end)
    assert at > 0, "no avcC box"
    (size,) = struct.unpack_from(">I", data, at - 4)
    data[at + 4 : at - 4 + size] = b"\xff" * (size - 8)
    return V.write_bytes(path, bytes(data))


def drop_last_sample_duration(src: str, path: Path) -> str:
    """The last ``stts`` delta set to 0: the container no longer says how long its last frame
    is shown (some muxers write 0 there; MPEG-TS never says), so both decoders' frame tables end
    where the last frame starts. The last ``stts`` run must hold only the last sample (runs
    share one delta), as it does for a clip whose last frame's duration differs from the gaps."""
    data = bytearray(Path(src).read_bytes())
    _, payload, _ = find_box(data, "moov/trak/mdia/minf/stbl/stts")
    (entries,) = struct.unpack_from(">I", data, payload + 4)
    last = payload + 8 + 8 * (entries - 1)
    count, _ = struct.unpack_from(">II", data, last)
    assert count == 1, f"the last stts run holds {count} samples, not only the last one"
    struct.pack_into(">I", data, last + 4, 0)
    return V.write_bytes(path, bytes(data))
