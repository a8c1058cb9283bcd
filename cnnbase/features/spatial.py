"""Spatial-search patch features (Razavian et al. 2014, §3.6 "-ss"), extracted into the feature store.

Every image of a split is described by the features of its multi-level sub-patches: level ``i = 1..levels`` tiles
the image with ``i × i`` overlapping boxes (:func:`cnnbase.heads.retrieval.spatial_boxes`; 4 levels = 30 patches
for reference images, 3 levels = 14 for queries). Each patch is given to the network as "the smallest square
containing" it (:func:`cnnbase.heads.retrieval.square_box`) rather than resized to a square: the square is cut from
the image and, where it overhangs the image (the whole-image box of a landscape photo, a patch of a narrow query
crop), the overhang is **padded with the normalisation mean colour** (``round(255 · mean)``, which the network
input normalisation maps to ≈0), never clipped (clipping would be a non-square resize) and never black (PIL's
``crop`` pads with black, an out-of-distribution colour). The square is then resized to the network input with the
backbone's (or the card's) preprocessing.

One decode per image: the image (the query crop for cropped queries) is read once through
:func:`cnnbase.images.load_rgb` and all its patches are cut from the decoded pixels in the decode worker.

Store layout: one entry per (backbone, layer, preprocessing, dataset, split, patch layout) holding a
``(n_images, patches, d)`` array (patches are the entry's ``views``), written in shards and resumable like every
other entry. The patch layout (levels, square rule, fill colour) is part of the key, so it can never be confused
with whole-image or jittered features.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from PIL import Image

from ..backbones import Preprocess
from ..datasets.base import ImageSet
from ..errors import ConfigError
from ..heads.retrieval import spatial_boxes, square_box
from .store import Features
from .views import preprocess_hwc, stack_hwc

__all__ = ["extract_patches", "fill_colour", "n_patches", "patch_squares", "patch_views", "square_crop", "spatial_spec"]

#: Version of the patch geometry; part of the store key (bump it if spatial_boxes/square_box ever change).
LAYOUT_VERSION = 1


def n_patches(levels: int) -> int:
    """Number of sub-patches of levels 1..``levels``: 1 + 4 + … + levels² (4 → 30, 3 → 14)."""
    return levels * (levels + 1) * (2 * levels + 1) // 6


def fill_colour(pre: Preprocess) -> tuple[int, int, int]:
    """The padding colour: the normalisation mean in 8-bit RGB (maps to ≈0 after normalisation)."""
    return tuple(int(round(255 * m)) for m in pre.mean)  # type: ignore[return-value]


def patch_squares(width: int, height: int, levels: int) -> list[tuple[int, int, int, int]]:
    """The squares the network sees, one per sub-patch of levels 1..``levels``, in :func:`spatial_boxes` order."""
    return [square_box(b, width, height) for b in spatial_boxes(width, height, levels)]


def square_crop(img: Image.Image, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> Image.Image:
    """Cut ``box`` (may overhang the image) from ``img``; the overhang is filled with ``fill``."""
    x0, y0, x1, y1 = box
    w, h = img.size
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return img.crop(box)
    out = Image.new("RGB", (x1 - x0, y1 - y0), fill)
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if ix1 > ix0 and iy1 > iy0:
        out.paste(img.crop((ix0, iy0, ix1, iy1)), (ix0 - x0, iy0 - y0))
    return out


def patch_views(img: Image.Image, levels: int, pre: Preprocess) -> torch.Tensor:
    """uint8 ``(patches, 3, crop, crop)``: every sub-patch's smallest containing square, padded, preprocessed."""
    fill = fill_colour(pre)
    w, h = img.size
    return stack_hwc([preprocess_hwc(square_crop(img, b, fill), pre) for b in patch_squares(w, h, levels)])


def spatial_spec(levels: int, pre: Preprocess) -> dict[str, Any]:
    """The store-key field describing the patch layout."""
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ConfigError(f"spatial-search levels must be a positive integer; got {levels!r}")
    return {
        "version": LAYOUT_VERSION,
        "levels": levels,
        "patches": n_patches(levels),
        "boxes": "level i: i x i boxes of 2/(i+1) of each side, stride 1/(i+1) (heads.retrieval.spatial_boxes)",
        "square": "smallest square containing the patch (heads.retrieval.square_box); overhang padded",
        "fill": list(fill_colour(pre)),
    }


def extract_patches(
    model: str,
    dataset: str | ImageSet,
    *,
    split: str,
    levels: int,
    layer: str | None = None,
    opts: Any = None,
    ctx: Any = None,
) -> Features:
    """Spatial-search patch features ``(n_images, n_patches(levels), d)`` of one split, from the store or extracted.

    Args:
        model: backbone name.
        dataset: a dataset name or an opened :class:`ImageSet` (query samples may carry their crop box).
        split: the split to describe.
        levels: number of levels (Razavian: 4 for reference images, 3 for queries).
        layer: layer alias or node (default: the backbone's default layer).
        opts: :class:`cnnbase.runner.FeatureOptions` (its ``jitter`` is ignored: the patches are the views).
        ctx: :class:`cnnbase.runner.Context` (store, loaded backbones, progress).

    Returns:
        The complete entry's :class:`Features` (memory-mapped); ``valid`` is False for bad images skipped.
    """
    from ..runner import Context, FeatureOptions, load_features

    c = ctx or Context()
    o = replace(opts or FeatureOptions(), jitter=f"spatial:{levels}")
    return load_features(model, dataset, split=split, layer=layer, opts=o, ctx=c)
