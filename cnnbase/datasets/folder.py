"""Generic layouts: an image folder with one sub-folder per class, and a plain list file.

Folder layouts (class names = sub-folder names, sorted):

* ``root/<class>/<image>`` → one split ``all``, plus ``train``/``test`` made deterministically by putting
  every fifth image of each class (sorted by name) into ``test`` (80/20, as MIT-67's published split);
* ``root/<split>/<class>/<image>`` for any of ``train``, ``val``, ``trainval``, ``test`` → those splits.

List file: one sample per line, ``#`` starts a comment, fields separated by tabs (or, without tabs, by
whitespace with the path taking everything before the last two fields)::

    images/cat 01.jpg<TAB>cat<TAB>train
    images/dog.jpg<TAB>dog,person<TAB>test

A comma-separated label field makes the set multilabel (1 = present, -1 = absent). Paths are relative to the
list file's folder (or ``root=``) and may not escape it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .base import ImageSet, Sample, register_adapter, safe_join

SPLIT_DIRS = ("train", "val", "trainval", "test")


def _images_in(folder: Path) -> list[Path]:
    from ..images import is_image_file

    return sorted(p for p in folder.rglob("*") if is_image_file(p.name) and not p.is_dir())


@register_adapter("folder")
def read_folder(root: Path | str, *, test_every: int = 5) -> ImageSet:
    """Read ``root/<class>/*`` or ``root/<split>/<class>/*`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; check the path or datasets.yaml root")
    split_dirs = [d for d in SPLIT_DIRS if (root / d).is_dir()]
    layout = {d: root / d for d in split_dirs} if split_dirs else {"all": root}
    classes = sorted({c.name for base in layout.values() for c in base.iterdir() if c.is_dir()})
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders found; expected root/<class>/<image> or root/<split>/<class>/<image>")
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[Sample]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, base in layout.items():
        samples, ys = [], []
        for c in classes:
            if not (base / c).is_dir():
                continue
            for p in _images_in(base / c):
                samples.append(Sample(id=p.relative_to(root).as_posix(), path=p))
                ys.append(index[c])
        if not samples:
            raise DatasetError(f"{base}: no images found (looked for common image extensions in each class folder)")
        splits[split], labels[split] = samples, np.asarray(ys, dtype=np.int64)
    if "all" in splits:
        y = labels["all"]
        rank = np.zeros(len(y), dtype=np.int64)
        for c in range(len(classes)):
            idx = np.flatnonzero(y == c)
            rank[idx] = np.arange(len(idx))
        is_test = rank % test_every == test_every - 1
        for split, mask in (("train", ~is_test), ("test", is_test)):
            splits[split] = [s for s, m in zip(splits["all"], mask) if m]
            labels[split] = y[mask]
    return ImageSet(name=root.name, task="classification", root=root, classes=classes, splits=splits, labels=labels)


@register_adapter("list")
def read_list(path: Path | str, *, root: Path | str | None = None, allow_outside: bool = False) -> ImageSet:
    """Read a list file of ``path<TAB>label[,label...]<TAB>split`` lines (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.txt")) + sorted(path.glob("*.tsv"))
        if len(candidates) != 1:
            raise DatasetError(f"{path}: expected exactly one list file (*.txt or *.tsv) in the folder, found {len(candidates)}")
        path = candidates[0]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read list file {path}: {exc}") from None
    base = Path(root) if root else path.parent
    rows: list[tuple[Sample, list[str], str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else None
        if fields is None:
            parts = line.split()
            fields = [" ".join(parts[:-2]), *parts[-2:]] if len(parts) >= 3 else parts
        if len(fields) != 3 or not all(f.strip() for f in fields):
            raise DatasetError(f"{path}:{n}: expected 'path<TAB>label[,label...]<TAB>split', got {line!r}")
        rel, lab, split = (f.strip() for f in fields)
        img = safe_join(base, rel, where=f"{path}:{n}", allow_outside=allow_outside)
        rows.append((Sample(id=rel, path=img), [x.strip() for x in lab.split(",") if x.strip()], split))
    if not rows:
        raise DatasetError(f"{path}: no samples listed")
    classes = sorted({c for _, labs, _ in rows for c in labs})
    index = {c: i for i, c in enumerate(classes)}
    multilabel = any(len(labs) > 1 for _, labs, _ in rows)
    splits: dict[str, list[Sample]] = {}
    ys: dict[str, list] = {}
    for sample, labs, split in rows:
        splits.setdefault(split, []).append(sample)
        if multilabel:
            row = np.full(len(classes), -1, dtype=np.int8)
            row[[index[c] for c in labs]] = 1
            ys.setdefault(split, []).append(row)
        else:
            ys.setdefault(split, []).append(index[labs[0]])
    labels = {s: np.asarray(v, dtype=np.int8 if multilabel else np.int64) for s, v in ys.items()}
    return ImageSet(
        name=path.stem,
        task="multilabel" if multilabel else "classification",
        root=base,
        classes=classes,
        splits=splits,
        labels=labels,
    )
