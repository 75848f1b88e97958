"""Dataset builders: a config in, a list of ``ClipRow`` out, one module per layout.

Importing this package registers every built-in in ``DATASETS`` (``webvid``, ``manifest``,
``sample``, ``conversations``, ``webdataset``, ``image_folder``): it is the plugin module the
registry loads. Light at import on purpose (stdlib, registry and rows only): config validation
imports it to learn the registered names, and ``python train.py --cfg job`` must stay under a
second; the sample generator's numpy/av are imported when it runs.

Every builder has the signature
``build(video: VideoConfig, data: DataConfig, *, split: str, max_samples: int) -> list[ClipRow]``
with ``split`` in ``("train", "validation")`` and ``max_samples=0`` meaning all rows. A cap
stops *reading* early (lazy CSV/JSONL readers): taking 100 rows of a 10M-row manifest reads
100 rows. Builders never stat video files; a missing file is the decoder's ``missing`` skip,
counted per reason by the trainer. A dataset whose captions name attributes may also register
an ``AttributeScorer`` (``kvideo.data.scoring``) under its name, for per-attribute accuracy.
"""

from kvideo.data.datasets import conversations, image_folder, manifest, sample, webdataset, webvid

__all__ = ["conversations", "image_folder", "manifest", "sample", "webdataset", "webvid"]
