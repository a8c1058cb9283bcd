"""Check a dataset's annotation files against the published counts, with or without its images.

:func:`verify` reads a dataset exactly as training and evaluation will (through its adapter), then reports per
split the number of samples and how many of their image files are missing, the number of classes, attributes
and queries, and whether each count matches ``published:`` in ``datasets.yaml``. It never decodes an image.

Statuses: ``ok`` (matches), ``mismatch`` (differs: the files are not the official ones, or are incomplete),
``unpublished`` (nothing to compare with) and ``unknown`` (cannot be counted from the annotations alone: the
Oxford/Paris database list comes from the image folder). A report is ``ok`` when the annotations were
readable and nothing is ``mismatch``. Missing images are reported, never an error: verify is meant to run
before the images are downloaded.

:func:`locate` answers the cheaper question of ``cnnbase datasets list``: are the dataset's key files there?
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import DatasetConfig, load_dataset_configs
from ..errors import DatasetError
from .base import ImageSet

OK, MISMATCH, UNPUBLISHED, UNKNOWN = "ok", "mismatch", "unpublished", "unknown"


@dataclass
class Count:
    """One checked number."""

    what: str
    found: int | None
    published: int | None = None
    status: str = UNPUBLISHED
    missing_images: int | None = None


@dataclass
class Report:
    """What :func:`verify` found."""

    name: str
    adapter: str | None
    task: str | None
    root: str
    readable: bool
    error: str | None = None
    splits: list[Count] = field(default_factory=list)
    counts: list[Count] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Readable and no count contradicts the published ones."""
        return self.readable and all(c.status != MISMATCH for c in self.splits + self.counts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``ok`` included)."""
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _status(found: int | None, published: int | None) -> str:
    if published is None:
        return UNPUBLISHED
    if found is None:
        return UNKNOWN
    return OK if int(found) == int(published) else MISMATCH


class _Exists:
    """``path.exists()`` with one directory listing per folder (fast for 10k files, no per-file stat)."""

    def __init__(self) -> None:
        self._dirs: dict[str, set[str] | None] = {}

    def __call__(self, path: Path) -> bool:
        parent, name = os.path.split(os.fspath(path))
        if parent not in self._dirs:
            try:
                self._dirs[parent] = set(os.listdir(parent))
            except OSError:
                self._dirs[parent] = None
        names = self._dirs[parent]
        return names is not None and name in names


def count_missing(ds: ImageSet, split: str, exists: _Exists | None = None) -> int:
    """How many distinct image files of ``split`` are absent."""
    exists = exists or _Exists()
    paths = {s.path for s in ds.splits[split]}
    return sum(1 for p in paths if not exists(p))


def report_for(ds: ImageSet, cfg: DatasetConfig | None, root: Path, *, check_images: bool = True) -> Report:
    """Build the report of an already-opened dataset."""
    published: Mapping[str, Any] = cfg.published if cfg else {}
    pub_splits: Mapping[str, int] = published.get("splits") or {}
    rep = Report(name=ds.name, adapter=cfg.adapter if cfg else None, task=ds.task, root=str(root), readable=True)
    exists = _Exists()
    incomplete_db = ds.meta.get("database_complete") is False
    for split, samples in ds.splits.items():
        found: int | None = len(samples)
        status = _status(found, pub_splits.get(split))
        if incomplete_db and split == "database":
            rep.notes.append(
                f"database: only the {len(samples)} images named by the ground-truth files are known; the full list "
                "comes from the image folder, which was not found (or pass image_list)"
            )
            status = UNKNOWN if split in pub_splits else UNPUBLISHED
        missing = count_missing(ds, split, exists) if check_images else None
        rep.splits.append(Count(split, found, pub_splits.get(split), status, missing))
    for split in pub_splits:
        if split not in ds.splits:
            rep.splits.append(Count(split, None, pub_splits[split], MISMATCH))
            rep.notes.append(f"split {split!r} is published but was not found in the files")
    if ds.task == "attributes":
        rep.counts.append(Count("attributes", len(ds.classes), published.get("attributes"), _status(len(ds.classes), published.get("attributes"))))
        if "object_classes" in ds.meta:
            n = len(ds.meta["object_classes"])
            rep.counts.append(Count("object classes", n, published.get("classes"), _status(n, published.get("classes"))))
    elif ds.task != "retrieval":
        rep.counts.append(Count("classes", len(ds.classes), published.get("classes"), _status(len(ds.classes), published.get("classes"))))
    if ds.queries is not None:
        n = len(ds.queries)
        rep.counts.append(Count("queries", n, published.get("queries"), _status(n, published.get("queries"))))
    objects = ds.meta.get("objects")
    if isinstance(objects, dict):
        n_obj = sum(len(v) for v in objects.values())
        rep.counts.append(Count("objects (XML)", n_obj, published.get("objects"), _status(n_obj, published.get("objects"))))
        if ds.meta.get("annotations_missing"):
            rep.notes.append(f"{len(ds.meta['annotations_missing'])} images have no Annotations/*.xml")
    rep.notes.extend(str(n) for n in ds.meta.get("notes") or [])
    if ds.meta.get("variant"):
        rep.notes.append(f"variant: {ds.meta['variant']} images ({ds.meta.get('image_dir')})")
    if ds.meta.get("boxes_unclipped"):
        rep.notes.append(f"{ds.meta['boxes_unclipped']} boxes not clipped to their image (image file absent)")
    if ds.meta.get("nan_boxes"):
        rep.notes.append(f"{len(ds.meta['nan_boxes'])} samples have NaN boxes in the file and use the whole image")
    return rep


def verify(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    datasets: str | os.PathLike[str] | None = None,
    check_images: bool = True,
) -> Report:
    """Open ``name`` (a ``datasets.yaml`` entry, an image folder or a list file) and report on it.

    An unreadable dataset gives a report with ``readable=False`` and ``error`` set (the one-line
    DatasetError message); an unknown name raises, as ``open_dataset`` does.
    """
    from . import open_dataset

    cfg = load_dataset_configs(datasets).get(os.fspath(name))
    where = Path(root).expanduser() if root else (cfg.root if cfg else Path(name))
    try:
        ds = open_dataset(name, root=root, datasets=datasets)
    except DatasetError as exc:
        if cfg is None and not Path(name).exists():
            raise
        return Report(
            name=os.fspath(name), adapter=cfg.adapter if cfg else None, task=cfg.task if cfg else None, root=str(where), readable=False, error=str(exc)
        )
    return report_for(ds, cfg, where, check_images=check_images)


# --------------------------------------------------------------------------------------------- cheap presence


def _markers(cfg: DatasetConfig) -> list[list[str]]:
    """Alternatives (any one suffices) of globs (all must match) that show a dataset's annotations are there."""
    opts = cfg.options
    a = cfg.adapter
    if a == "voc":
        y = opts.get("year", 2007)
        return [[f"VOC{y}/ImageSets/Main/*.txt"], [f"VOCdevkit/VOC{y}/ImageSets/Main/*.txt"], ["ImageSets/Main/*.txt"]]
    if a == "mit67":
        return [["TrainImages.txt", "TestImages.txt"]]
    if a == "cub":
        return [["CUB_200_2011/images.txt"], ["images.txt"]]
    if a == "flowers102":
        return [["imagelabels.mat", "setid.mat"]]
    if a == "uiuc_attributes":
        return [["attribute_data/attribute_names.txt"], ["attribute_names.txt"]]
    if a == "people_attributes":
        return [["train/labels.txt", "test/labels.txt"]]
    if a == "oxford_paris":
        return [["*_query.txt"], ["*/*_query.txt"]]
    if a == "revisited":
        return [[f"gnd_{opts['name']}.pkl" if opts.get("name") else "gnd_*.pkl"]]
    if a == "holidays":
        return [["holidays_images.dat"], ["gnd_holidays.mat"], ["jpg_rotated/*.jpg" if opts.get("rotated") else "jpg/*.jpg"]]
    if a == "ukbench":
        return [["full/ukbench00000.jpg"], ["ukbench00000.jpg"], ["jpg/ukbench00000.jpg"]]
    return [["*"]]


def locate(cfg: DatasetConfig, root: Path | None = None) -> tuple[bool, str]:
    """``(found, what)``: whether the key annotation files of ``cfg`` are under ``root`` (default: its root)."""
    root = root or cfg.root
    if not root.exists():
        return False, f"no folder {root}"
    for alternative in _markers(cfg):
        if all(next(iter(root.glob(g)), None) is not None for g in alternative):
            return True, ", ".join(alternative)
    return False, "no " + " or ".join(" + ".join(alt) for alt in _markers(cfg)) + f" in {root}"


def verify_or_raise(name: str, **kwargs: Any) -> Report:
    """:func:`verify`, raising the DatasetError of an unreadable dataset (for library callers)."""
    rep = verify(name, **kwargs)
    if not rep.readable:
        raise DatasetError(rep.error or f"{name}: unreadable")
    return rep


__all__ = ["Count", "Report", "locate", "report_for", "verify", "verify_or_raise"]
