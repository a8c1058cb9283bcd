"""Localisation maps (Oquab et al. 2014 §3.3, Fig. 1/6): the average score of all patches covering each pixel.

:func:`localisation_map` gives a float map ``(h, w)`` for one image and class, from that image's patch boxes and
``p(class | patch)``; pixels no patch covers are 0. :func:`save_map_png` writes what a person can look at: the
image on the left, the same image overlaid with the map (colour scale fixed to [0, 1], so maps of different images
and classes compare) on the right, and a colour bar below.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..features.store import atomic_write_bytes

# A perceptually ordered dark-blue → red → yellow scale (anchors of "inferno"-like colours).
_ANCHORS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float64,
)


def localisation_map(boxes: np.ndarray, scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` float32: at each pixel, the mean of ``scores`` over the patches whose box covers it.

    Args:
        boxes: ``(P, 4)`` integer ``(x0, y0, x1, y1)``, right/bottom exclusive.
        scores: ``(P,)`` the class score of each patch.
        size: ``(w, h)`` of the image.
    """
    w, h = int(size[0]), int(size[1])
    total = np.zeros((h + 1, w + 1), dtype=np.float64)
    count = np.zeros((h + 1, w + 1), dtype=np.float64)
    b = np.clip(np.asarray(boxes, dtype=np.int64), 0, None)
    x0, y0 = np.minimum(b[:, 0], w), np.minimum(b[:, 1], h)
    x1, y1 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    s = np.asarray(scores, dtype=np.float64)
    for arr, v in ((total, s), (count, np.ones_like(s))):  # 2-D difference arrays, then cumulative sums
        np.add.at(arr, (y0, x0), v)
        np.add.at(arr, (y0, x1), -v)
        np.add.at(arr, (y1, x0), -v)
        np.add.at(arr, (y1, x1), v)
    total = total.cumsum(0).cumsum(1)[:h, :w]
    count = count.cumsum(0).cumsum(1)[:h, :w]
    out = np.zeros((h, w), dtype=np.float32)
    covered = count > 0.5
    out[covered] = (total[covered] / count[covered]).astype(np.float32)
    return out


def colorize(values: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., 3)`` of ``values`` clipped to [0, 1] on the module's colour scale."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(v).astype(np.int64)
    hi = np.minimum(lo + 1, len(_ANCHORS) - 1)
    t = (v - lo)[..., None]
    return np.round(_ANCHORS[lo] * (1 - t) + _ANCHORS[hi] * t).astype(np.uint8)


def render_map(
    image: Image.Image, heat: np.ndarray, *, title: str = "", alpha: float = 0.6, min_side: int = 240
) -> Image.Image:
    """Side by side: ``image`` | ``image`` blended with the coloured ``heat`` map; a 0–1 colour bar and title below.

    Images whose shorter side is below ``min_side`` are enlarged by a whole factor (nearest neighbour, so the map's
    patch edges stay visible) to leave room for the title.
    """
    img = image.convert("RGB")
    factor = max(1, -(-min_side // max(1, min(img.size))))
    if factor > 1:
        img = img.resize((img.size[0] * factor, img.size[1] * factor), Image.NEAREST)
        heat = np.repeat(np.repeat(np.asarray(heat), factor, axis=0), factor, axis=1)
    w, h = img.size
    base = np.asarray(img, dtype=np.float64)
    overlay = np.round(base * (1 - alpha) + colorize(heat) * alpha).astype(np.uint8)
    bar_h, text_h = 12, 16
    canvas = Image.new("RGB", (2 * w, h + bar_h + text_h), (255, 255, 255))
    canvas.paste(img, (0, 0))
    canvas.paste(Image.fromarray(overlay), (w, 0))
    bar = colorize(np.linspace(0.0, 1.0, 2 * w))[None, :, :].repeat(bar_h, axis=0)
    canvas.paste(Image.fromarray(bar), (0, h))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, h + bar_h + 2), f"{title}   (colour scale: patch score 0 to 1)", fill=(0, 0, 0))
    return canvas


def save_map_png(path: str | os.PathLike[str], image: Image.Image, heat: np.ndarray, *, title: str = "") -> Path:
    """Write :func:`render_map` as a PNG (atomically); returns the path."""
    import io

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    render_map(image, heat, title=title).save(buf, format="PNG")
    atomic_write_bytes(p, buf.getvalue())
    return p
