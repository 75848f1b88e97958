"""``ClipSettings``: what kvideo's data code reads of a run's config, taken from it once.

The data code owns the ``video``, ``data`` and ``decoder`` nodes. It needs a few values that other
nodes fix for it: the run's seed and worker count (``trainer``), the text length, the frame rule
and the pixel statistics of the model the frames feed (``model``). ``ClipSettings.of`` reads them
at the boundary, so that the datasets and loaders never hold the root config and a reader of
``kvideo.data`` sees exactly what it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvideo.config import DataConfig, DecoderConfig, KVideoConfig, ModelConfig, VideoConfig
from kvideo.data.picture_tiles import TILING_TYPES, PictureTiling
from kvideo.data.preprocess import Statistics, pixel_statistics
from kvideo.preflight.frames import frame_resize, max_visual_tokens, padded_tokens
from kvideo.resize import Resize


@dataclass(frozen=True)
class ClipSettings:
    """video / data / decoder: the data code's own config nodes.
    seed: ``trainer.seed`` (the sampling jitter, the epoch orders, the loader's generator).
    num_workers: ``trainer.num_workers`` (DataLoader worker processes).
    max_text_len: ``model.max_text_len`` (every row's text is padded or cut to it).
    resize: the rule frames are sized by (``kvideo.preflight.frames.frame_resize``).
    statistics: the vision part's pixel mean and std (``pixel_statistics``).
    visual_tokens: the most visual tokens one clip can give (``max_visual_tokens``).
    padded_tokens: what one padded sample costs (``padded_tokens``).
    marks_pictures: whether samples say which clips are pictures (``picture``): for a released
        VLM (``model.path``), which reads them through its image route; the other families read a
        picture as the one-frame clip it is.
    picture_tiling: for the released families that tile a picture from its own size
        (``kvideo.data.picture_tiles``), their image processor's rule; None for the others."""

    video: VideoConfig
    data: DataConfig
    decoder: DecoderConfig
    seed: int
    num_workers: int
    max_text_len: int
    resize: Resize
    statistics: Statistics
    visual_tokens: int
    padded_tokens: int
    marks_pictures: bool = False
    picture_tiling: PictureTiling | None = None

    @classmethod
    def of(cls, cfg: KVideoConfig) -> ClipSettings:
        """The settings a run's config gives its data code (reads the model folder's geometry for
        ``model=pretrained`` / ``hf_vlm``, as the pre-flight step already did)."""
        video, model = cfg.video, cfg.model
        return cls(
            video=video,
            data=cfg.data,
            decoder=cfg.decoder,
            seed=cfg.trainer.seed,
            num_workers=cfg.trainer.num_workers,
            max_text_len=model.max_text_len,
            resize=frame_resize(video, model),
            statistics=pixel_statistics(model),
            visual_tokens=max_visual_tokens(video, model),
            padded_tokens=padded_tokens(video, model),
            marks_pictures=model.pretrained_model,
            picture_tiling=picture_tiling(video, model),
        )


def picture_tiling(video: VideoConfig, model: ModelConfig) -> PictureTiling | None:
    """The tiling rule of a released VLM whose image route tiles pictures, else None."""
    if not model.pretrained_model:
        return None
    from kvideo.hf_folders import resolve_model_folder, video_vlm_geometry

    folder = resolve_model_folder("model.path", model.path)
    geometry = video_vlm_geometry("model.path", folder)
    if geometry.model_type not in TILING_TYPES:
        return None
    # a tile's tokens: LLaVA's tiles are its full patch grid (only video frames are pooled)
    llava = (geometry.image_size // geometry.patch_size) ** 2
    tile_tokens = llava if geometry.model_type.startswith("llava") else geometry.tokens_per_frame
    return PictureTiling(str(folder), geometry.model_type, video.max_frames, geometry.image_size, tile_tokens)
