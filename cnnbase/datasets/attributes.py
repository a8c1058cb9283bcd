"""Attribute benchmarks: UIUC aPascal / aYahoo (Farhadi et al. 2009) and the Berkeley "H3D" people attributes.

**UIUC 64 attributes** (``adapter: uiuc_attributes``). Layout (``root``; the official tarballs unpack so)::

    attribute_data/apascal_train.txt   one line per *object*: <image> <class> <xmin> <ymin> <xmax> <ymax> <64 x 0/1>
    attribute_data/apascal_test.txt    (aPascal "test" = VOC2008 val)
    attribute_data/ayahoo_test.txt
    attribute_data/attribute_names.txt 64 names, one per line (names contain spaces: "2D Boxy")
    attribute_data/class_names.txt     32 object classes
    VOCdevkit/VOC2008/JPEGImages/      aPascal images (VOCtrainval_14-Jul-2008.tar)
    ayahoo_test_images/                aYahoo images (ayahoo_test_images.tar.gz)

* One sample per object; an image with three objects gives three samples, each cropped to its object box. The
  box is 1-based inclusive (VOC convention; the minimum in the files is 1), so the crop box is
  ``(xmin-1, ymin-1, xmax, ymax)``. Sample ids: ``<image>#<k>``, k = the object's index among that image's
  lines in its file (0-based), unique across the dataset.
* ``task = "attributes"``; ``labels[split]`` is int8 ``(n, 64)`` in {1, -1} (file 1 → 1, 0 → -1);
  ``classes`` are the 64 attribute names. The object class of each sample is in
  ``meta['object_classes']`` (the 32 names) and ``meta['object_class'][split]`` (int64 indices), for the
  "within category" evaluation.
* ``subset: apascal`` → splits ``train`` (apascal_train) and ``test`` (apascal_test).
  ``subset: ayahoo`` → ``train`` = apascal_train and ``test`` = ayahoo_test (the across-category protocol:
  train on aPascal, test on aYahoo's 12 new classes).

**H3D / Berkeley attributes of people** (``adapter: people_attributes``). Razavian's Table 6 ("H3D") lists the
nine attributes and baselines (Poselets, DPD; PANDA 78.98) of the Bourdev, Maji & Malik ICCV 2011 "attributes
of people" dataset, whose people come partly from H3D. No copy of its labels was found (shared/annotations
SOURCES.md), but its format is established by public code that reads it: ``matlab/get_iccv_data.m`` in
``facebookarchive/pose-aligned-deep-networks`` (PANDA)::

    train/labels.txt, test/labels.txt   textscan '%s %f %f %f %f %d %d %d %d %d %d %d %d %d':
                                        <image name> <x> <y> <width> <height> <9 labels>
    train/<NNNNN>.jpg, test/<NNNNN>.jpg the image number is the name's first 5 characters ('%05d.jpg')

What that code does not settle, and cnnbase assumes: labels are 1 / -1 / 0 (present / absent /
unspecified, kept as given; 0 is ignored by the metric as VOC's 0); the attribute order is the paper's
(``H3D_ATTRIBUTES``); bounds are poselets' ``[x y width height]`` in pixels. Some bounds are NaN in the file
(PANDA patches them from a private ``iccv_bounds_patches.mat``): those samples keep the whole image
(``box=None``) and are listed in ``meta['nan_boxes']``. Boxes are enlarged by ``box_scale`` (Razavian: 150%,
read as ×1.5 per side, see :mod:`cnnbase.datasets.cub`) and clipped to the image when the file is present.
Published split sizes are not pinned: they could not be confirmed from a public source.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from ._annotations import (
    bad_line,
    fields,
    first_existing,
    image_size,
    lines,
    scale_box,
    to_float,
    to_int,
)
from .base import ImageSet, Sample, register_adapter, safe_join

H3D_ATTRIBUTES = ("is_male", "has_long_hair", "has_glasses", "has_hat", "has_t-shirt", "has_long_sleeves", "has_shorts", "has_jeans", "has_long_pants")


def find_attribute_dir(root: Path) -> Path | None:
    """``root/attribute_data`` or ``root`` itself, whichever holds ``attribute_names.txt``."""
    return first_existing((root / "attribute_data", root), test=lambda p: (p / "attribute_names.txt").is_file())


@register_adapter("uiuc_attributes")
def read_uiuc_attributes(
    root: Path | str,
    *,
    subset: str = "apascal",
    pascal_images: str = "VOCdevkit/VOC2008/JPEGImages",
    yahoo_images: str = "ayahoo_test_images",
) -> ImageSet:
    """Read the UIUC attribute annotations (see the module docstring).

    Args:
        root: the folder holding ``attribute_data/`` (or ``attribute_data/`` itself).
        subset: ``"apascal"`` (train/test on aPascal) or ``"ayahoo"`` (train on aPascal, test on aYahoo).
        pascal_images: the aPascal (VOC2008) image folder, relative to ``root``.
        yahoo_images: the aYahoo image folder, relative to ``root``.
    """
    if subset not in ("apascal", "ayahoo"):
        raise ConfigError(f"uiuc_attributes subset must be 'apascal' or 'ayahoo', not {subset!r}")
    root = Path(root)
    adir = find_attribute_dir(root)
    if adir is None:
        raise DatasetError(
            f"{root}: attribute_data/attribute_names.txt not found; run `cnnbase datasets download {subset}` "
            "or point --root at the folder holding attribute_data/"
        )
    attr_names = [t for _, t in lines(adir / "attribute_names.txt", "one attribute name per line", subset)]
    class_names = [t for _, t in lines(adir / "class_names.txt", "one class name per line", subset)]
    if len(set(class_names)) != len(class_names):
        raise DatasetError(f"{adir / 'class_names.txt'}: a class name repeats; download attribute_data again")
    cindex = {c: i for i, c in enumerate(class_names)}
    plan = [("train", "apascal_train.txt", pascal_images)]
    plan.append(("test", "apascal_test.txt", pascal_images) if subset == "apascal" else ("test", "ayahoo_test.txt", yahoo_images))
    splits: dict[str, list[Sample]] = {}
    labels: dict[str, np.ndarray] = {}
    objclass: dict[str, np.ndarray] = {}
    width = 6 + len(attr_names)
    seen_ids: dict[str, str] = {}
    for split, fname, img_rel in plan:
        f = adir / fname
        samples, ys, cs = [], [], []
        counter: dict[str, int] = {}
        img_dir = root / img_rel
        for n, parts in fields(f, f"'<image> <class> <xmin> <ymin> <xmax> <ymax> <{len(attr_names)} attributes>'", width, subset):
            image, cls = parts[0], parts[1]
            if cls not in cindex:
                raise bad_line(f, n, f"unknown class {cls!r} (not in class_names.txt)")
            x0, y0, x1, y1 = (to_float(v, f, n, k) for v, k in zip(parts[2:6], ("xmin", "ymin", "xmax", "ymax"), strict=True))
            if x1 < x0 or y1 < y0:
                raise bad_line(f, n, f"box ({x0:g} {y0:g} {x1:g} {y1:g}) has xmax < xmin or ymax < ymin")
            vals = []
            for j, tok in enumerate(parts[6:]):
                if tok not in ("0", "1"):
                    raise bad_line(f, n, f"attribute {j + 1} ({attr_names[j]}) is {tok!r}, expected 0 or 1")
                vals.append(1 if tok == "1" else -1)
            k = counter.get(image, 0)
            counter[image] = k + 1
            sid = f"{image}#{k}"
            if sid in seen_ids:
                raise bad_line(f, n, f"sample {sid} was already read from {seen_ids[sid]}", "an image may not appear in two annotation files")
            seen_ids[sid] = f"{f}:{n}"
            samples.append(Sample(id=sid, path=safe_join(img_dir, image, where=f"{f}:{n}"), box=(x0 - 1.0, y0 - 1.0, x1, y1)))
            ys.append(vals)
            cs.append(cindex[cls])
        if not samples:
            raise DatasetError(f"{f}: lists no objects; download attribute_data again")
        splits[split] = samples
        labels[split] = np.asarray(ys, dtype=np.int8)
        objclass[split] = np.asarray(cs, dtype=np.int64)
    meta = {"subset": subset, "object_classes": class_names, "object_class": objclass, "box_convention": "1-based inclusive -> (xmin-1, ymin-1, xmax, ymax)"}
    return ImageSet(name=subset, task="attributes", root=root, classes=attr_names, splits=splits, labels=labels, meta=meta)


@register_adapter("people_attributes")
def read_people_attributes(
    root: Path | str,
    *,
    box_scale: float = 1.5,
    clip_boxes: bool = True,
    attributes: list[str] | tuple[str, ...] = H3D_ATTRIBUTES,
) -> ImageSet:
    """Read the Berkeley people-attributes ``{train,test}/labels.txt`` (format and assumptions: module docstring)."""
    if box_scale <= 0:
        raise ConfigError(f"people_attributes box_scale must be positive, not {box_scale}")
    root = Path(root)
    n_attr = len(attributes)
    splits: dict[str, list[Sample]] = {}
    labels: dict[str, np.ndarray] = {}
    nan_boxes: list[str] = []
    annotated: dict[str, tuple[float, float, float, float] | None] = {}
    for split in ("train", "test"):
        f = root / split / "labels.txt"
        samples, ys = [], []
        counter: dict[str, int] = {}
        for n, parts in fields(f, f"'<image> <x> <y> <width> <height> <{n_attr} labels>'", 5 + n_attr, "h3d"):
            name = parts[0]
            if len(name) < 5 or not name[:5].isdigit():
                raise bad_line(f, n, f"image name {name!r} does not start with a 5-digit image number")
            x, y, w, h = (to_float(v, f, n, k, allow_nan=True) for v, k in zip(parts[1:5], ("x", "y", "width", "height"), strict=True))
            vals = [to_int(t, f, n, f"label {j + 1}") for j, t in enumerate(parts[5:])]
            bad = [v for v in vals if v not in (-1, 0, 1)]
            if bad:
                raise bad_line(f, n, f"label {bad[0]} is not one of 1, -1, 0")
            k = counter.get(name, 0)
            counter[name] = k + 1
            sid = f"{split}/{name}#{k}"
            path = safe_join(root / split, f"{int(name[:5]):05d}.jpg", where=f"{f}:{n}")
            if any(math.isnan(v) for v in (x, y, w, h)):
                nan_boxes.append(sid)
                box, annotated[sid] = None, None
            else:
                if w <= 0 or h <= 0:
                    raise bad_line(f, n, f"box has width {w:g} and height {h:g}", "boxes need a positive size")
                annotated[sid] = (x, y, x + w, y + h)
                box = scale_box((x, y, x + w, y + h), box_scale, image_size(path) if clip_boxes else None)
            samples.append(Sample(id=sid, path=path, box=box))
            ys.append(vals)
        if not samples:
            raise DatasetError(f"{f}: lists no people; download the dataset again")
        splits[split] = samples
        labels[split] = np.asarray(ys, dtype=np.int8)
    meta = {
        "nan_boxes": nan_boxes,
        "box_scale": box_scale,
        "annotated_boxes": annotated,
        "format_source": "facebookarchive/pose-aligned-deep-networks matlab/get_iccv_data.m",
    }
    return ImageSet(name="h3d", task="attributes", root=root, classes=list(attributes), splits=splits, labels=labels, meta=meta)
