"""What every dataset adapter produces: an :class:`ImageSet` of :class:`Sample` s with splits and ground truth.

An *adapter* reads one official on-disk format (a VOCdevkit, an Oxford ``gt_files`` folder, an image folder,
...) and returns an ``ImageSet``. Adapters are registered in :data:`ADAPTERS` under the name used by the
``adapter:`` field of ``datasets.yaml``, and are called as ``adapter(root, **options)``.

Conventions (shared by every adapter, relied on by the feature store and the heads):

* ``Sample.id`` is unique within the dataset and stable across machines (a path relative to the root, or the
  official image name); it is what the feature store's manifest lists and what records refer to.
* ``Sample.box`` is the region the network sees, ``(x0, y0, x1, y1)`` in pixels of the decoded image,
  0-based, right/bottom exclusive (a PIL crop box). ``None`` means the whole image.
* ``ImageSet.labels[split]`` depends on ``task``:

  - ``"classification"``: int64 array ``(n,)`` of class indices into ``classes``;
  - ``"multilabel"`` / ``"attributes"``: int8 array ``(n, C)`` in {1, -1, 0}, 1 = present, -1 = absent,
    0 = difficult/ignored (VOC's convention);
  - ``"retrieval"``: absent; ground truth is in ``ImageSet.queries``.
* Retrieval sets have the split ``"database"`` and a split ``"query"`` (whose samples may carry the query box).
  ``queries[i]`` is the ground truth of ``splits["query"][i]``: a dict of int64 arrays of *database*
  indices. Keys in use: ``"positives"`` and ``"junk"`` (Oxford/Paris: good ∪ ok, junk; Holidays; UKBench;
  folders), ``"easy"``, ``"hard"`` and ``"junk"`` (revisited), and ``"self"`` (the database index of the
  query image itself when the query is also in the database, as in Holidays and UKBench).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import Registry

TASKS = ("classification", "multilabel", "attributes", "retrieval")


@dataclass(frozen=True)
class Sample:
    """One image (or one region of an image) as the network will see it."""

    id: str
    path: Path
    box: tuple[float, float, float, float] | None = None

    def identity(self) -> list[Any]:
        """What of the sample changes the features (used to hash an ordered image list)."""
        return [self.id, None if self.box is None else [float(v) for v in self.box]]


@dataclass
class ImageSet:
    """A dataset read from its official files: samples per split and their ground truth."""

    name: str
    task: str
    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    queries: list[dict[str, np.ndarray]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {self.task!r}")

    def samples(self, split: str) -> list[Sample]:
        """The ordered samples of ``split``; an unknown split raises a DatasetError listing the known ones."""
        from ..errors import DatasetError

        if split not in self.splits:
            raise DatasetError(
                f"dataset {self.name!r} has no split {split!r}; choose one of: {', '.join(self.splits)}"
            )
        return self.splits[split]

    def split_hash(self, split: str) -> str:
        """sha256 of the ordered sample identities of ``split`` (part of every feature-store key)."""
        payload = json.dumps([s.identity() for s in self.samples(split)], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


Adapter = Callable[..., ImageSet]
ADAPTERS: Registry[Adapter] = Registry("dataset adapter")


def register_adapter(name: str) -> Callable[[Adapter], Adapter]:
    """Decorator: make ``fn(root, **options) -> ImageSet`` available as ``adapter: name`` in datasets.yaml."""
    return ADAPTERS.register(name)  # type: ignore[return-value]


def check_split_sizes(found: Mapping[str, int], expected: Mapping[str, int]) -> list[str]:
    """Human-readable mismatches between found and published split sizes (empty when all match)."""
    return [
        f"{split}: {found.get(split, 0)} images, published {n}"
        for split, n in expected.items()
        if found.get(split, 0) != n
    ]


def ordered_unique(items: Sequence[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


def safe_join(root: Path, rel: str, *, where: str = "", allow_outside: bool = False) -> Path:
    """``root / rel``, refusing absolute paths and ``..`` that escape ``root`` (unless ``allow_outside``).

    ``where`` names the annotation file and line for the error message, e.g. ``"list.txt:12"``. The check is
    lexical (no file-system calls, so symlinked image folders inside ``root`` keep working); Windows separators
    and drive letters (``..\\x``, ``C:\\x``) count as escapes too. A ``..`` that stays inside ``root`` is folded
    away (``a/../b.jpg`` → ``root/b.jpg``), so the path opened is the path checked.
    """
    from ..errors import DatasetError

    p = Path(rel)
    posix = str(rel).replace("\\", "/")
    drive = len(posix) >= 2 and posix[1] == ":" and posix[0].isalpha()
    if not p.is_absolute() and not posix.startswith("/") and not drive and ".." not in Path(posix).parts:
        return root / p  # cheap path: nothing in the text can escape (symlinked folders inside root stay allowed)
    if allow_outside:
        return p if p.is_absolute() else root / p
    base = os.path.abspath(root)
    target = os.path.abspath(os.path.join(base, posix))  # an absolute ``posix`` replaces ``base``
    if drive or not target.startswith(base.rstrip(os.sep) + os.sep):
        raise DatasetError(
            f"{where or rel}: path {rel!r} points outside the dataset root {root}; "
            "fix the annotation, or if this is intended set `options: {allow_outside: true}` for the dataset in "
            "datasets.yaml (allow_outside=True in Python)"
        )
    return Path(os.path.normpath(os.path.join(root, posix)))


def retrieval_from_labels(ds: ImageSet, query_split: str, db_split: str) -> list[dict[str, np.ndarray]]:
    """Ground truth for retrieval on a labelled set: a query's positives are the database images of its class.

    Multilabel sets count an image as positive when it shares at least one present label with the query.
    """
    qy, dy = ds.labels[query_split], ds.labels[db_split]
    gnd = []
    for i in range(len(qy)):
        if qy.ndim == 1:
            pos = np.flatnonzero(dy == qy[i])
        else:
            pos = np.flatnonzero(((dy == 1) & (qy[i] == 1)).any(axis=1))
        gnd.append({"positives": pos.astype(np.int64), "junk": np.zeros(0, np.int64)})
    return gnd
