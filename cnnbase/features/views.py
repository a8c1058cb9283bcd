"""From a decoded image to the network's input views: preprocessing and jitter, on uint8 tensors.

Pixels stay uint8 until the batch reaches the model (:func:`normalize_batch`), which keeps worker→main
transfers 4× smaller and gives exactly torchvision's ``ToTensor()`` + ``Normalize()`` numbers. View tensors are
``(V, 3, H, W)`` in shape and channels-last in memory (PIL's own pixel order, :func:`stack_hwc`): decoded pixels
are never transposed, and a batch of them is already in the layout the network runs in.

Jitter recipes (``--jitter``):

* ``none``: the image itself (1 view).
* ``flip``: the image and its mirror (2 views).
* ``razavian``: Razavian et al. 2014's "CNNaug" 16 views: the image, 5 crops of 4/9 of its area (sides ×2/3) at the
  four corners and the centre, 2 rotations, and the horizontal mirror of each of these 8. The paper does not give
  the rotation angles; cnnbase uses ±10° about the centre, each rotated image cropped to the largest axis-aligned
  rectangle of the original aspect ratio that holds no fill pixels (so no invented black corners enter the
  features). The angles are part of the jitter spec and hence of the store key and every record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from ..backbones.spec import Preprocess
from ..errors import ConfigError

_MODES = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


@dataclass(frozen=True)
class JitterSpec:
    """Which views of each image are stored (see the module docstring)."""

    name: str = "none"
    crop_side: float = 2.0 / 3.0
    rotations: tuple[float, ...] = ()
    levels: int = 0  # spatial: sub-patch levels 1..levels (cnnbase.features.spatial)

    @property
    def views(self) -> int:
        if self.name == "spatial":
            from .spatial import n_patches

            return n_patches(self.levels)
        return {"none": 1, "flip": 2}.get(self.name, 2 * (1 + 5 + len(self.rotations)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rotations"] = list(self.rotations)
        if self.name == "spatial":
            from .spatial import LAYOUT_VERSION

            d["layout_version"] = LAYOUT_VERSION
        return d

    @classmethod
    def parse(cls, name: str | None) -> JitterSpec:
        if not name or name == "none":
            return cls("none")
        if name == "flip":
            return cls("flip")
        if name == "razavian":
            return cls("razavian", 2.0 / 3.0, (-10.0, 10.0))
        if name.startswith("spatial:") and name[8:].isdigit() and int(name[8:]) >= 1:
            return cls("spatial", levels=int(name[8:]))
        raise ConfigError(f"unknown --jitter {name!r}; choose none, flip, razavian or spatial:LEVELS")


_PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _region_resize(img: Image.Image, p: Preprocess) -> Image.Image | None:
    """``Resize(p.resize)`` + ``CenterCrop(p.crop)`` resampling only the crop's region (``p.region_resize``), or None
    where the exact path runs: not asked for, an image that is enlarged rather than reduced (small, so cheap; and
    bicubic upsampling differed by 2/255), or one torchvision would not resize or would pad."""
    if not (p.region_resize and p.mode == "center_crop" and p.antialias and p.interpolation in _PIL_FILTERS):
        return None
    w, h = img.size
    short, long_ = (w, h) if w <= h else (h, w)
    if short <= p.resize:
        return None
    new_long = int(p.resize * long_ / short)  # torchvision's output size for an int size
    nw, nh = (p.resize, new_long) if w <= h else (new_long, p.resize)
    if (nw, nh) == (w, h) or nw < p.crop or nh < p.crop:
        return None
    top, left = int(round((nh - p.crop) / 2.0)), int(round((nw - p.crop) / 2.0))  # torchvision's center_crop
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + p.crop) * sx, (top + p.crop) * sy)
    return img.resize((p.crop, p.crop), _PIL_FILTERS[p.interpolation], box=box)


def preprocess_pil(img: Image.Image, p: Preprocess) -> torch.Tensor:
    """One PIL RGB image → uint8 tensor (3, crop, crop), exactly as torchvision's eval transform resizes and crops
    (to within 1/255 per pixel with ``p.region_resize``)."""
    return torch.from_numpy(np.ascontiguousarray(preprocess_hwc(img, p).transpose(2, 0, 1)))


def stack_hwc(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` arrays' stack as a ``(N, 3, H, W)`` tensor in channels-last memory: one copy, no
    transpose (torch's uint8 ``permute().contiguous()`` took 0.3 ms per image on one thread and 8 ms on two)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def preprocess_hwc(img: Image.Image, p: Preprocess) -> np.ndarray:
    """:func:`preprocess_pil` as a uint8 ``(crop, crop, 3)`` array, in PIL's pixel order (may be read-only)."""
    mode = _MODES[p.interpolation]
    if (region := _region_resize(img, p)) is not None:
        img = region
    elif p.mode == "square":
        img = F.resize(img, [p.crop, p.crop], interpolation=mode, antialias=p.antialias)
    else:
        img = F.resize(img, [p.resize], interpolation=mode, antialias=p.antialias)
        img = F.center_crop(img, [p.crop, p.crop])
    arr = np.asarray(img, dtype=np.uint8)
    return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr


def rotated_inner_crop(img: Image.Image, angle: float) -> Image.Image:
    """Rotate about the centre and crop the largest fill-free rectangle with the original aspect ratio."""
    w, h = img.size
    rot = img.rotate(angle, resample=Image.BILINEAR, expand=False)
    t = math.radians(abs(angle))
    c, s = math.cos(t), math.sin(t)
    scale = min(w / (w * c + h * s), h / (w * s + h * c))
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return rot.crop((x0, y0, x0 + cw, y0 + ch))


def jitter_images(img: Image.Image, spec: JitterSpec) -> list[Image.Image]:
    """The views of ``img`` in a fixed, documented order (originals first, then their mirrors)."""
    if spec.name == "none":
        return [img]
    if spec.name == "flip":
        return [img, img.transpose(Image.FLIP_LEFT_RIGHT)]
    w, h = img.size
    cw, ch = max(1, round(w * spec.crop_side)), max(1, round(h * spec.crop_side))
    boxes = [
        (0, 0, cw, ch),
        (w - cw, 0, w, ch),
        (0, h - ch, cw, h),
        (w - cw, h - ch, w, h),
        ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch),
    ]
    base = [img] + [img.crop(b) for b in boxes] + [rotated_inner_crop(img, a) for a in spec.rotations]
    return base + [v.transpose(Image.FLIP_LEFT_RIGHT) for v in base]


def make_views(img: Image.Image, p: Preprocess, spec: JitterSpec) -> torch.Tensor:
    """uint8 tensor (views, 3, crop, crop), channels-last in memory, from one decoded image."""
    if spec.name == "spatial":
        from .spatial import patch_views

        return patch_views(img, spec.levels, p)
    return stack_hwc([preprocess_hwc(v, p) for v in jitter_images(img, spec)])


def normalize_batch(x: torch.Tensor, p: Preprocess, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, 3, H, W) → normalised float: ``ToTensor()`` then ``Normalize()`` as one multiply-add per pixel.

    ``x * (1 / (255 std)) - mean / std`` in float32 equals ``(x / 255 - mean) / std`` to within float32 rounding
    (relative 1e-7), then rounded to ``dtype``. The result keeps ``x``'s memory layout (channels-last views stay
    channels-last, which the network wants on the CPU). On the CPU one image at a time goes through a float32 buffer
    that stays in cache: the whole batch's float32 copy (19 MB for 32 crops of 224²) cost 1.05 ms per image in fresh
    pages, against 0.22 ms (``scripts/bench_extract.py`` (d) runs it).
    """
    std = torch.tensor(p.std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).to(torch.float32)
    bias = (-torch.tensor(p.mean, dtype=torch.float64) / std).to(torch.float32)
    n, _, h, w = x.shape
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if channels_last:
        # channels-last views (stack_hwc): an image is h rows of w*3 interleaved values; per-channel constants tiled
        # along the row keep the inner loop long and vectorised (a size-3 inner broadcast ran 2-4x slower)
        src = x.permute(0, 2, 3, 1).reshape(n, h, w * 3)  # a view, in memory order
        scale, bias = scale.repeat(w).view(1, -1), bias.repeat(w).view(1, -1)
    else:
        src, scale, bias = x, scale.view(3, 1, 1), bias.view(3, 1, 1)
    scale, bias = scale.to(x.device), bias.to(x.device)
    out = torch.empty(src.shape, dtype=dtype, device=x.device)
    if x.device.type != "cpu":  # memory is not the bottleneck there: one kernel for the batch
        out.copy_(torch.addcmul(bias, src.to(torch.float32), scale))
    else:
        tmp = None if dtype == torch.float32 else torch.empty(src.shape[1:], dtype=torch.float32)
        for i in range(n):
            buf = out[i] if tmp is None else tmp
            buf.copy_(src[i])
            torch.addcmul(bias, buf, scale, out=buf)
            if tmp is not None:
                out[i].copy_(tmp)
    return out.view(n, h, w, 3).permute(0, 3, 1, 2) if channels_last else out
