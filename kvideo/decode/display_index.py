"""A video's display timeline from its container alone (PyAV's demuxer, no decoding), for a
decoder that is given frame indices (``nvdec``).

NVDEC decodes what its own demuxer hands it and numbers frames in display order; which frame is
displayed at a time, and when, is the container's business: ``frame_index.Timeline`` over the
presentation times of the packets that are shown (VFR gaps, stream start offsets), exactly as
``pyav_cpu`` builds it, so an index means the same frame to every decoder. The one thing NVDEC's
numbering may not share is an MP4 edit list's pre-roll (frames the container says to decode but
never show): ``preroll`` counts them, and such a clip is decoded by ``pyav_cpu`` instead, as
``decord_cpu`` hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvideo.decode.frame_index import Timeline
from kvideo.decode.pyav_decoder import demux, open_video
from kvideo.decode.types import VideoSource, source_name


@dataclass(frozen=True)
class DisplayIndex:
    """timeline: display start of each shown frame (``Timeline``); index ``i`` is the i-th frame
    shown. preroll: frames an edit list hides before the first shown one (0 for most files).
    width / height: the stream's coded size (what ``video.resize`` scales from)."""

    timeline: Timeline
    preroll: int
    width: int
    height: int


def display_index(source: VideoSource) -> DisplayIndex:
    """``source``'s ``DisplayIndex``, or the ``DecodeError`` the CPU decoders give a file whose
    container cannot be read (``unreadable``, ``no_video_stream``, ``decode_error``)."""
    container = open_video(source)
    try:
        stream = demux(container, source_name(source))
        ctx = container.streams.video[0].codec_context
        first_shown = int(stream.pts[0])
        preroll = sum(
            1
            for packet in stream.packets
            if packet.is_discard and (packet.pts if packet.pts is not None else packet.dts) < first_shown
        )
        return DisplayIndex(stream.timeline, preroll, int(ctx.width), int(ctx.height))
    finally:
        container.close()
