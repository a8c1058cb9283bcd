"""PASCAL VOC classification (2007, 2012), read from the devkit's own files.

Layout (``root`` may be the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself, or ``VOC2007/`` itself)::

    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt     one image id per line
    VOCdevkit/VOC2007/ImageSets/Main/{class}_{split}.txt               "<id> <label>", label 1 / -1 / 0
    VOCdevkit/VOC2007/Annotations/<id>.xml                             objects: class, box, difficult, truncated
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg

* Splits: every one of train/val/trainval/test whose list file exists. Labels are int8 ``(n, 20)`` in
  {1, -1, 0}, 0 = "difficult only" (VOC's convention, ignored by the VOC07 metric). Classes are the 20 VOC
  classes in the devkit's (alphabetical) order.
* A split whose per-class files are all absent has no labels: VOC2012 ``test`` (the test labels were never
  published; results go to the evaluation server). It is listed in ``meta['unlabelled_splits']``, ``split in
  labels`` is False, and ``labels[split]`` raises :class:`UnlabelledSplitError` (a DatasetError and a KeyError)
  saying so.
* ``meta['objects'][sample_id]`` (when ``Annotations/`` exists): one dict per object with ``class``,
  ``class_index``, ``box`` (PIL crop box: VOC's 1-based inclusive ``xmin ymin xmax ymax`` become
  ``(xmin-1, ymin-1, xmax, ymax)``), ``bndbox`` (the XML numbers as written), ``difficult``, ``truncated``,
  ``occluded`` (bool) and ``pose``. ``meta['image_size'][sample_id] = (width, height)`` from the XML.
  XML files that are missing are listed in ``meta['annotations_missing']``.
* Sample ids are the VOC image ids (``"000005"``), boxes ``None`` (Razavian: VOC boxes are not used).

Line endings may be CRLF (the copies in ``shared/annotations``) or LF (the devkit tarball); labels are padded
(``000012  1``), so fields are split on whitespace.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ._annotations import bad_line, fields, first_existing, to_float, to_int
from .base import ImageSet, Sample, register_adapter, safe_join

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SPLITS = ("train", "val", "trainval", "test")


class UnlabelledSplitError(DatasetError, KeyError):
    """Asking for the labels of a split that has none (VOC2012 test). Also a KeyError, for dict semantics."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SplitLabels(dict):  # type: ignore[type-arg]
    """``ImageSet.labels`` that explains, instead of a bare KeyError, why a listed split has no labels."""

    def __init__(self, labels: dict[str, np.ndarray], why: dict[str, str]) -> None:
        super().__init__(labels)
        self.why = dict(why)

    def __missing__(self, split: str) -> np.ndarray:
        if split in self.why:
            raise UnlabelledSplitError(self.why[split])
        raise KeyError(split)


def find_voc_dir(root: Path, year: int | str) -> Path | None:
    """The ``VOC<year>`` folder under ``root`` (which may be its parent, grandparent or the folder itself)."""
    tag = f"VOC{year}"
    return first_existing(
        (root / tag, root / "VOCdevkit" / tag, root), test=lambda p: (p / "ImageSets" / "Main").is_dir()
    )


@register_adapter("voc")
def read_voc(
    root: Path | str,
    *,
    year: int | str = 2007,
    objects: bool | str = "auto",
    image_dir: str = "JPEGImages",
) -> ImageSet:
    """Read a VOC devkit (see the module docstring).

    Args:
        root: the folder holding ``VOCdevkit/`` (or ``VOCdevkit/`` or ``VOC<year>/`` itself).
        year: 2007 or 2012 (any devkit year works).
        objects: parse ``Annotations/*.xml`` into ``meta['objects']``: ``"auto"`` when the folder exists,
            ``True`` to require it, ``False`` to skip.
        image_dir: the images folder inside ``VOC<year>/``.
    """
    root = Path(root)
    voc = find_voc_dir(root, year)
    name = f"voc{year}"
    if voc is None:
        raise DatasetError(
            f"{root}: no VOC{year} devkit found (looked for VOC{year}/ImageSets/Main, VOCdevkit/VOC{year}/ImageSets/Main "
            f"and ImageSets/Main); run `cnnbase datasets download {name}` or point --root at the folder holding VOCdevkit"
        )
    main = voc / "ImageSets" / "Main"
    splits: dict[str, list[Sample]] = {}
    labels: dict[str, np.ndarray] = {}
    unlabelled: list[str] = []
    images = voc / image_dir
    for split in SPLITS:
        list_file = main / f"{split}.txt"
        if not list_file.is_file():
            continue
        ids: list[str] = []
        seen: dict[str, int] = {}
        for n, parts in fields(list_file, "an image id", name=name):
            if len(parts) != 1:
                raise bad_line(list_file, n, f"expected one image id, found {len(parts)} fields")
            image_id = parts[0]
            if image_id in seen:
                raise bad_line(list_file, n, f"image id {image_id} repeats line {seen[image_id]}")
            seen[image_id] = n
            ids.append(image_id)
        if not ids:
            raise DatasetError(f"{list_file}: lists no images; the file is truncated, download the devkit again")
        splits[split] = [
            Sample(id=i, path=safe_join(images, f"{i}.jpg", where=f"{list_file}:{seen[i]}")) for i in ids
        ]
        y = _read_class_labels(main, split, ids, name)
        if y is None:
            unlabelled.append(split)
        else:
            labels[split] = y
    if not splits:
        raise DatasetError(f"{main}: none of {', '.join(s + '.txt' for s in SPLITS)} found; the devkit is incomplete")
    meta: dict[str, object] = {"year": int(year), "devkit": str(voc), "unlabelled_splits": unlabelled}
    why = {}
    for split in unlabelled:
        why[split] = f"{name} split {split!r} has no labels: {main} holds no <class>_{split}.txt files" + (
            " (VOC2012 test labels were never published; score test predictions on the VOC evaluation server, "
            "or evaluate on val)" if int(year) == 2012 else "; the devkit is incomplete, download it again"
        )
    if unlabelled:
        meta["notes"] = list(why.values())
    ann = voc / "Annotations"
    if objects is True and not ann.is_dir():
        raise DatasetError(f"{ann}: folder not found but objects=True; download the devkit with annotations or set objects: false")
    if objects and ann.is_dir():
        all_ids = list(dict.fromkeys(s.id for samples in splits.values() for s in samples))
        meta.update(read_voc_objects(ann, all_ids))
    return ImageSet(
        name=name, task="multilabel", root=voc, classes=list(VOC_CLASSES), splits=splits, labels=SplitLabels(labels, why), meta=meta
    )


def _read_class_labels(main: Path, split: str, ids: list[str], name: str) -> np.ndarray | None:
    files = [main / f"{c}_{split}.txt" for c in VOC_CLASSES]
    present = [f.is_file() for f in files]
    if not any(present):
        return None
    if not all(present):
        missing = files[present.index(False)]
        raise DatasetError(
            f"{missing}: file not found although other classes have {split} labels; the devkit is incomplete, download it again"
        )
    row_of = {i: r for r, i in enumerate(ids)}
    y = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.int8)
    for c, f in enumerate(files):
        seen = np.zeros(len(ids), dtype=bool)
        for n, parts in fields(f, "'<image id> <label>'", 2, name=name):
            image_id, lab = parts
            r = row_of.get(image_id)
            if r is None:
                raise bad_line(f, n, f"image {image_id} is not listed in {split}.txt", "the class file and split list disagree; download the devkit again")
            if seen[r]:
                raise bad_line(f, n, f"image {image_id} is listed twice")
            value = to_int(lab, f, n, "label")
            if value not in (-1, 0, 1):
                raise bad_line(f, n, f"label {value} is not one of 1, -1, 0")
            y[r, c] = value
            seen[r] = True
        if not seen.all():
            first = ids[int(np.flatnonzero(~seen)[0])]
            raise DatasetError(f"{f}: no label for image {first} (and {int((~seen).sum()) - 1} more) listed in {split}.txt; download the devkit again")
    return y


def read_voc_objects(ann: Path, ids: list[str]) -> dict[str, object]:
    """Parse ``Annotations/<id>.xml`` for each id: ``{'objects': {...}, 'image_size': {...}, 'annotations_missing': [...]}``."""
    index = {c: i for i, c in enumerate(VOC_CLASSES)}
    objects: dict[str, list[dict[str, object]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    missing: list[str] = []
    for image_id in ids:
        f = ann / f"{image_id}.xml"
        try:
            tree = ET.parse(f)
        except FileNotFoundError:
            missing.append(image_id)
            continue
        except (ET.ParseError, OSError) as exc:
            raise DatasetError(f"{f}: not readable XML ({exc}); download the devkit again") from None
        node = tree.getroot()
        size = node.find("size")
        if size is not None and size.findtext("width") and size.findtext("height"):
            sizes[image_id] = (int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0"))))
        objs = []
        for k, obj in enumerate(node.findall("object")):
            cls = (obj.findtext("name") or "").strip()
            if cls not in index:
                raise bad_line(f, None, f"object {k} has unknown class {cls!r} (expected one of the 20 VOC classes)", "download the devkit again")
            bb = obj.find("bndbox")
            if bb is None:
                raise bad_line(f, None, f"object {k} ({cls}) has no <bndbox>", "download the devkit again")
            raw = []
            for tag in ("xmin", "ymin", "xmax", "ymax"):
                text = bb.findtext(tag)
                if text is None:
                    raise bad_line(f, None, f"object {k} ({cls}) has no <{tag}>", "download the devkit again")
                raw.append(to_float(text.strip(), f, None, f"<{tag}> of object {k}"))
            objs.append(
                {
                    "class": cls,
                    "class_index": index[cls],
                    "box": (raw[0] - 1.0, raw[1] - 1.0, raw[2], raw[3]),
                    "bndbox": tuple(raw),
                    "difficult": _flag(obj, "difficult"),
                    "truncated": _flag(obj, "truncated"),
                    "occluded": _flag(obj, "occluded"),
                    "pose": (obj.findtext("pose") or "").strip(),
                }
            )
        objects[image_id] = objs
    return {"objects": objects, "image_size": sizes, "annotations_missing": missing}


def _flag(obj: ET.Element, tag: str) -> bool:
    text = (obj.findtext(tag) or "0").strip()
    try:
        return bool(int(float(text)))
    except ValueError:
        return False

