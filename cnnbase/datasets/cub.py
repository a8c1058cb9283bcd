"""Caltech-UCSD Birds-200-2011, official split and bounding boxes.

Layout (``root`` may be ``CUB_200_2011/`` or the folder holding it, as the official tgz unpacks)::

    CUB_200_2011/images.txt              "<image_id> <class folder>/<file>"
    CUB_200_2011/image_class_labels.txt  "<image_id> <class_id>"
    CUB_200_2011/train_test_split.txt    "<image_id> <is_training_image>"     1 = train (5994), 0 = test (5794)
    CUB_200_2011/classes.txt             "<class_id> <class name>"            200 classes, file order
    CUB_200_2011/bounding_boxes.txt      "<image_id> <x> <y> <width> <height>" floats, pixels, 0-based
    CUB_200_2011/images/<class folder>/<file>

Ids are 1-based and matched by value, never by line position. Folder and file casing differ
(``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``): paths are used exactly as listed and the
class is never guessed from the file name; the class folder of every image must equal its labelled class.

Boxes (``use_boxes=True``, the default, as Razavian: "only use the bounding box annotation"):

* the annotated box is ``(x, y, x + w, y + h)`` (a PIL crop box);
* Razavian enlarges it "by 150%" for context. cnnbase reads that as **each side × 1.5 about the box centre**
  (``box_scale: 1.5``; the enlarged box is 150% of the original's width and height, 2.25× its area). The other
  reading (+150%, i.e. ×2.5) is ``box_scale: 2.5``;
* the enlarged box is **clipped to the image** here, in the adapter, using the size read from the JPEG header
  only (``PIL.Image.open(...).size``: no decoding). When an image file is absent its box cannot be clipped and
  is kept unclipped (``meta['boxes_unclipped']`` counts them); such samples cannot be extracted anyway, so
  the boxes of every extractable sample are always clipped.

``meta['annotated_boxes'][sample_id]`` keeps the box as annotated (before enlargement).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from ._annotations import bad_line, fields, image_size, lines, scale_box, to_float, to_int
from .base import ImageSet, Sample, register_adapter, safe_join

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def find_cub_dir(root: Path) -> Path | None:
    """``root/CUB_200_2011`` or ``root`` itself, whichever holds ``images.txt``."""
    for c in (root / "CUB_200_2011", root):
        if (c / "images.txt").is_file():
            return c
    return None


def _by_id(path: Path, what: str, ncols: int, known: dict[int, int] | None = None) -> dict[int, tuple[int, list[str]]]:
    out: dict[int, tuple[int, list[str]]] = {}
    for n, parts in fields(path, what, ncols, name="cub200"):
        key = to_int(parts[0], path, n, "id")
        if key in out:
            raise bad_line(path, n, f"id {key} repeats line {out[key][0]}")
        if known is not None and key not in known:
            raise bad_line(path, n, f"image id {key} is not in images.txt", "the annotation files disagree; download CUB_200_2011.tgz again")
        out[key] = (n, parts[1:])
    return out


@register_adapter("cub")
def read_cub(
    root: Path | str,
    *,
    use_boxes: bool = True,
    box_scale: float = 1.5,
    clip_boxes: bool = True,
) -> ImageSet:
    """Read CUB-200-2011 (see the module docstring for the box convention).

    Args:
        root: ``CUB_200_2011/`` or its parent.
        use_boxes: crop every sample to its (enlarged) bounding box; False = whole images.
        box_scale: side-length factor applied about the box centre (1.0 = the box as annotated).
        clip_boxes: clip the enlarged box to the image (needs the image file; header only).
    """
    if box_scale <= 0:
        raise ConfigError(f"cub box_scale must be positive, not {box_scale}")
    root = Path(root)
    base = find_cub_dir(root)
    if base is None:
        raise DatasetError(
            f"{root}: images.txt not found (looked in {root / 'CUB_200_2011'} and {root}); "
            "run `cnnbase datasets download cub200` or point --root at CUB_200_2011"
        )
    images_txt = base / "images.txt"
    images: dict[int, tuple[int, str]] = {}
    for n, text in lines(images_txt, "'<image_id> <path>'", "cub200"):
        key_s, rel = (text.split(None, 1) + [""])[:2]
        rel = rel.strip()
        if not rel:
            raise bad_line(images_txt, n, f"expected '<image_id> <path>', got {text!r}")
        key = to_int(key_s, images_txt, n, "image id")
        if key in images:
            raise bad_line(images_txt, n, f"image id {key} repeats line {images[key][0]}")
        images[key] = (n, rel)
    if not images:
        raise DatasetError(f"{images_txt}: lists no images; download CUB_200_2011.tgz again")
    known = {k: v[0] for k, v in images.items()}

    classes_txt = base / "classes.txt"
    class_index: dict[int, int] = {}
    classes: list[str] = []
    for n, text in lines(classes_txt, "'<class_id> <name>'", "cub200"):
        key_s, cname = (text.split(None, 1) + [""])[:2]
        key = to_int(key_s, classes_txt, n, "class id")
        if key in class_index or not cname.strip():
            raise bad_line(classes_txt, n, f"class id {key} repeats or has no name")
        class_index[key] = len(classes)
        classes.append(cname.strip())

    labels_txt = base / "image_class_labels.txt"
    lab = _by_id(labels_txt, "'<image_id> <class_id>'", 2, known)
    split_txt = base / "train_test_split.txt"
    tts = _by_id(split_txt, "'<image_id> <is_training_image>'", 2, known)
    for f, table in ((labels_txt, lab), (split_txt, tts)):
        if len(table) != len(images):
            absent = next(k for k in images if k not in table)
            raise DatasetError(f"{f}: no entry for image id {absent} (images.txt:{images[absent][0]}); download CUB_200_2011.tgz again")

    boxes: dict[int, tuple[float, float, float, float]] = {}
    if use_boxes:
        bbox_txt = base / "bounding_boxes.txt"
        for key, (n, vals) in _by_id(bbox_txt, "'<image_id> <x> <y> <width> <height>'", 5, known).items():
            x, y, w, h = (to_float(v, bbox_txt, n, name) for v, name in zip(vals, ("x", "y", "width", "height"), strict=True))
            if w <= 0 or h <= 0:
                raise bad_line(bbox_txt, n, f"box of image {key} has width {w} and height {h}", "boxes need a positive size")
            boxes[key] = (x, y, x + w, y + h)
        if len(boxes) != len(images):
            absent = next(k for k in images if k not in boxes)
            raise DatasetError(f"{bbox_txt}: no box for image id {absent}; download CUB_200_2011.tgz again or set use_boxes: false")

    img_dir = base / "images"
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    ys: dict[str, list[int]] = {"train": [], "test": []}
    annotated: dict[str, tuple[float, float, float, float]] = {}
    unclipped = 0
    for key in sorted(images):
        n, rel = images[key]
        ln, (cls_s,) = lab[key]
        cls_id = to_int(cls_s, labels_txt, ln, "class id")
        if cls_id not in class_index:
            raise bad_line(labels_txt, ln, f"class id {cls_id} is not in classes.txt", "download CUB_200_2011.tgz again")
        c = class_index[cls_id]
        folder = rel.split("/", 1)[0]
        if "/" in rel and folder != classes[c]:
            raise bad_line(
                images_txt, n, f"image {key} sits in folder {folder!r} but image_class_labels.txt:{ln} gives class {classes[c]!r}",
                "the annotation files disagree; download CUB_200_2011.tgz again",
            )
        sn, (flag_s,) = tts[key]
        flag = to_int(flag_s, split_txt, sn, "is_training_image")
        if flag not in (0, 1):
            raise bad_line(split_txt, sn, f"is_training_image is {flag}, expected 1 (train) or 0 (test)")
        split = "train" if flag == 1 else "test"
        path = safe_join(img_dir, rel, where=f"{images_txt}:{n}")
        box = None
        if use_boxes:
            annotated[rel] = boxes[key]
            size = image_size(path) if clip_boxes else None
            if clip_boxes and size is None:
                unclipped += 1
            box = scale_box(boxes[key], box_scale, size)
        splits[split].append(Sample(id=rel, path=path, box=box))
        ys[split].append(c)
    labels = {s: np.asarray(v, dtype=np.int64) for s, v in ys.items()}
    meta: dict[str, object] = {
        "use_boxes": use_boxes,
        "box_scale": box_scale if use_boxes else None,
        "box_convention": "annotated (x, y, x+w, y+h) scaled about its centre by box_scale per side, clipped to the image",
        "boxes_unclipped": unclipped,
    }
    if use_boxes:
        meta["annotated_boxes"] = annotated
    return ImageSet(name="cub200", task="classification", root=base, classes=classes, splits=splits, labels=labels, meta=meta)

