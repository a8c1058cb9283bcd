"""MIT Indoor-67 with the official 80/20-per-class subset of Quattoni & Torralba (CVPR 2009).

Layout (``root``)::

    TrainImages.txt      "<class>/<file>" per line (5360 lines)
    TestImages.txt       same (1340 lines)
    Images/<class>/<file>                   (the indoorCVPR_09.tar image folder)

Paths contain spaces (``mall/shopping mall.jpg``), so a line is one path, never split on whitespace; the
official files have no newline after the last line. The class is the path's first component; the 67 classes
are sorted by name. Sample ids are the paths as listed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ._annotations import bad_line, lines
from .base import ImageSet, Sample, register_adapter, safe_join


@register_adapter("mit67")
def read_mit67(
    root: Path | str,
    *,
    image_dir: str = "Images",
    train_file: str = "TrainImages.txt",
    test_file: str = "TestImages.txt",
) -> ImageSet:
    """Read MIT-67's ``TrainImages.txt`` / ``TestImages.txt`` (see the module docstring)."""
    root = Path(root)
    images = root / image_dir
    rows: dict[str, list[tuple[str, str, str]]] = {}
    first_seen: dict[str, str] = {}
    for split, fname in (("train", train_file), ("test", test_file)):
        f = root / fname
        out = []
        for n, rel in lines(f, "the MIT-67 image list", "mit67"):
            rel = rel.replace("\\", "/")
            cls, sep, rest = rel.partition("/")
            if not sep or not cls or not rest:
                raise bad_line(f, n, f"expected '<class>/<image file>', got {rel!r}")
            where = f"{f}:{n}"
            if rel in first_seen:
                raise bad_line(f, n, f"image {rel!r} is already listed at {first_seen[rel]}", "each image may appear once in the two lists")
            first_seen[rel] = where
            out.append((rel, cls, where))
        if not out:
            raise DatasetError(f"{f}: lists no images; download it again")
        rows[split] = out
    classes = sorted({cls for r in rows.values() for _, cls, _ in r})
    index = {c: i for i, c in enumerate(classes)}
    splits = {
        split: [Sample(id=rel, path=safe_join(images, rel, where=where)) for rel, _, where in r] for split, r in rows.items()
    }
    labels = {split: np.asarray([index[c] for _, c, _ in r], dtype=np.int64) for split, r in rows.items()}
    return ImageSet(name="mit67", task="classification", root=root, classes=classes, splits=splits, labels=labels, meta={"image_dir": str(images)})
