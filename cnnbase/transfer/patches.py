"""Oquab et al. 2014 §3.2: the multi-scale patch grid, the patch labelling rules and background subsampling.

**Grid.** For an image of ``w`` × ``h`` pixels and each scale ``λ`` the patch side is ``s = round(min(w, h) / λ)``
(at least 1 pixel). Patches of one scale lie on a regular grid that spans the image edge to edge: along an axis of
length ``L`` there are ``n = ceil((L - s) / m) + 1`` positions ``floor(linspace(0, L - s, n))``, where ``m`` is the
largest allowed step in whole pixels. ``m = max(1, floor(f · s))`` with ``f ≤ 1 - min_overlap`` (``f ≤ 0.5`` by
default), so neighbouring patches overlap by at least ``1 - m / s ≥ 50%`` of their side, horizontally and vertically.
The paper asks for "about 500" patches per image but does not say how the step is chosen: cnnbase picks ``f`` per
image, from the ladder ``1 - min_overlap`` then 0.005 steps down to 0.02, as the value whose total count over all scales is closest
to ``target`` (ties: the larger step, i.e. fewer patches). With exactly 50% overlap a 500 × 375 VOC image has only
~275 patches over the nine scales; ~500 needs ~63% overlap, which the rule finds. The choice depends only on the
image size, so the grid of an image is the same in training, test and every rerun. Patch order: scale by scale (in
the order given), then row by row, then left to right.

**Scales.** The paper lists nine values λ ∈ {1, 1.3, 1.6, 2, 2.4, 2.8, 3.2, 3.6, 4} but its text says "eight
different scales"; cnnbase uses the nine listed values (:data:`OQUAB_SCALES`), pinned in ``tasks/oquab2014.yaml``.

**Labels** (:func:`label_patches`). With ``P`` a patch, ``B`` an object box and ``|·|`` areas in pixels:

* an object *matches* the patch when ``|P∩B| ≥ 0.2·|P|`` (rule i) and ``|P∩B| ≥ 0.6·|B|`` (rule ii);
* an object *overlaps* the patch when ``|P∩B| ≥ overlap_min·|P|`` (default 0.2, the same "sufficient overlap" as
  rule i; ``overlap_min = 0`` means any intersection of positive area), and every matching object overlaps;
* matching objects of **two or more classes** → the patch carries two labels and is **dropped** (the paper's
  Fig. 4); this check comes first;
* exactly one matching object and no other overlapping object (rule iii: "overlaps no more than one object") →
  **positive** for that object's class;
* a match that fails rule iii (two objects of the same class, or a match plus another overlapping object) →
  ``ambiguous`` policy: ``"background"`` (default: the paper's "patches that fail the criteria are background") or
  ``"drop"``;
* anything else → **background**.

VOC ``difficult`` objects (the paper is silent): ``difficult="object"`` (default) treats them as any other
object; ``"drop"`` drops every patch that matches or overlaps a difficult object. Comparisons are inclusive (``≥``)
with a relative tolerance of 1e-9 so that exact fractions land on the positive side despite float rounding.

**Background subsampling** (:func:`subsample_background`): exactly ``round(rate · N)`` of the ``N`` background
patches of the training split are kept, drawn uniformly without replacement with the training seed; positives
are all kept. The kept set is fixed for the whole training (the paper's mini-batches "draw from a training set
that keeps a random 10% of background patches").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError

#: The λ values of Oquab et al. 2014 §3.2 (nine listed, although the text says "eight scales").
OQUAB_SCALES: tuple[float, ...] = (1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0)

#: Label of a patch that is not used at all (two labels, or excluded by a policy).
DROPPED = -1

# why[] codes returned by label_patches (for statistics and tests)
WHY_POSITIVE, WHY_BACKGROUND, WHY_TWO_LABELS, WHY_AMBIGUOUS, WHY_DIFFICULT = 0, 1, 2, 3, 4
WHY_NAMES = ("positive", "background", "two_labels", "ambiguous", "difficult")

_EPS = 1e-9
_LADDER_STEP = 0.005


@dataclass(frozen=True)
class GridSpec:
    """How patches are laid out (see the module docstring)."""

    scales: tuple[float, ...] = OQUAB_SCALES
    target: int = 500
    min_overlap: float = 0.5

    def __post_init__(self) -> None:
        if not self.scales or any(not (s >= 1.0) for s in self.scales):
            raise ConfigError(f"patch scales must be λ ≥ 1 (side = min(w, h) / λ), got {list(self.scales)}")
        if self.target < 1:
            raise ConfigError(f"the target number of patches per image must be positive, got {self.target}")
        if not 0.0 <= self.min_overlap < 1.0:
            raise ConfigError(f"min_overlap must be in [0, 1), got {self.min_overlap}")

    @property
    def max_step(self) -> float:
        return 1.0 - self.min_overlap

    def to_dict(self) -> dict[str, Any]:
        return {"scales": [float(s) for s in self.scales], "target": int(self.target), "min_overlap": float(self.min_overlap)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GridSpec:
        return cls(
            scales=tuple(float(s) for s in d.get("scales", OQUAB_SCALES)),
            target=int(d.get("target", 500)),
            min_overlap=float(d.get("min_overlap", 0.5)),
        )


def _positions(length: int, side: int, step: int) -> np.ndarray:
    if side >= length:
        return np.zeros(1, dtype=np.int64)
    n = math.ceil((length - side) / step) + 1
    return np.floor(np.linspace(0.0, length - side, n)).astype(np.int64)


def _sides(w: int, h: int, scales: Sequence[float]) -> list[int]:
    return [max(1, int(round(min(w, h) / lam))) for lam in scales]


def _count(w: int, h: int, sides: Sequence[int], f: float) -> int:
    total = 0
    for s in sides:
        m = max(1, int(math.floor(f * s)))
        nx = 1 if s >= w else math.ceil((w - s) / m) + 1
        ny = 1 if s >= h else math.ceil((h - s) / m) + 1
        total += nx * ny
    return total


def choose_step(w: int, h: int, grid: GridSpec) -> float:
    """The step fraction ``f`` (≤ 1 - min_overlap) whose patch count is closest to ``grid.target``."""
    sides = _sides(w, h, grid.scales)
    best_f, best_gap = grid.max_step, None
    for f in _ladder(grid.max_step):  # decreasing f → nondecreasing counts; ties keep the larger f
        c = _count(w, h, sides, f)
        gap = abs(c - grid.target)
        if best_gap is None or gap < best_gap:
            best_f, best_gap = f, gap
        if c >= grid.target:
            break
    return best_f


def _ladder(max_step: float) -> list[float]:
    """``max_step`` then the multiples of 0.005 below it, down to 0.02 (the step fractions tried)."""
    top = math.floor(max_step / _LADDER_STEP + 1e-9)
    rest = [round(k * _LADDER_STEP, 6) for k in range(top, 3, -1)]
    return [max_step] + [f for f in rest if f < max_step - 1e-12]


def patch_grid(w: int, h: int, grid: GridSpec | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Patches of a ``w`` × ``h`` image.

    Returns:
        ``(boxes, scale_index, f)``: ``boxes`` int32 ``(P, 4)`` as ``(x0, y0, x1, y1)`` (PIL crop boxes: right and
        bottom exclusive, all inside the image), ``scale_index`` int16 ``(P,)`` into ``grid.scales``, and the step
        fraction used.
    """
    g = grid or GridSpec()
    if w < 1 or h < 1:
        raise DatasetError(f"cannot lay patches on an empty image ({w}x{h})")
    f = choose_step(w, h, g)
    boxes, scale = [], []
    for k, s in enumerate(_sides(w, h, g.scales)):
        m = max(1, int(math.floor(f * s)))
        xs, ys = _positions(w, s, m), _positions(h, s, m)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        xx, yy = xx.ravel(), yy.ravel()
        boxes.append(np.stack([xx, yy, xx + s, yy + s], axis=1))
        scale.append(np.full(len(xx), k, dtype=np.int16))
    return np.concatenate(boxes).astype(np.int32), np.concatenate(scale), f


# -- labels ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelRules:
    """The patch labelling rules (see the module docstring); defaults are the paper's."""

    patch_fraction: float = 0.2
    box_fraction: float = 0.6
    overlap_min: float = 0.2
    ambiguous: str = "background"
    difficult: str = "object"

    def __post_init__(self) -> None:
        for name in ("patch_fraction", "box_fraction", "overlap_min"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"label rule {name} must be in [0, 1], got {v}")
        if self.ambiguous not in ("background", "drop"):
            raise ConfigError(f"ambiguous must be background or drop, not {self.ambiguous!r}")
        if self.difficult not in ("object", "drop"):
            raise ConfigError(f"difficult must be object or drop, not {self.difficult!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageObjects:
    """The annotated objects of one image: class indices, boxes (float ``(O, 4)``, x0 y0 x1 y1) and difficult flags."""

    classes: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray

    @classmethod
    def empty(cls) -> ImageObjects:
        return cls(np.zeros(0, np.int64), np.zeros((0, 4), np.float64), np.zeros(0, bool))


def objects_from_meta(objs: Iterable[Mapping[str, Any]], classes: Sequence[str], *, where: str = "") -> ImageObjects:
    """``ImageSet.meta['objects'][id]`` (dicts with ``class``/``class_index``, ``box``, ``difficult``) → arrays."""
    index = {c: i for i, c in enumerate(classes)}
    cls, boxes, diff = [], [], []
    for k, o in enumerate(objs):
        if "class_index" in o and o["class_index"] is not None:
            ci = int(o["class_index"])
        else:
            name = o.get("class", o.get("name"))
            if name not in index:
                raise DatasetError(f"{where}: object {k} has class {name!r}, not one of the dataset's classes")
            ci = index[name]
        if not 0 <= ci < len(classes):
            raise DatasetError(f"{where}: object {k} has class index {ci} outside 0..{len(classes) - 1}")
        box = o.get("box")
        if box is None or len(box) != 4:
            raise DatasetError(f"{where}: object {k} has no 4-number box")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            raise DatasetError(f"{where}: object {k} has an empty or reversed box {tuple(box)}")
        cls.append(ci)
        boxes.append((x0, y0, x1, y1))
        diff.append(bool(o.get("difficult", False)))
    if not cls:
        return ImageObjects.empty()
    return ImageObjects(np.asarray(cls, np.int64), np.asarray(boxes, np.float64), np.asarray(diff, bool))


def intersections(patches: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(P, O)`` intersection areas of patches ``(P, 4)`` and boxes ``(O, 4)`` (x0, y0, x1, y1)."""
    p = np.asarray(patches, np.float64)[:, None, :]
    b = np.asarray(boxes, np.float64)[None, :, :]
    iw = np.clip(np.minimum(p[..., 2], b[..., 2]) - np.maximum(p[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(p[..., 3], b[..., 3]) - np.maximum(p[..., 1], b[..., 1]), 0, None)
    return iw * ih


def label_patches(
    patches: np.ndarray, objects: ImageObjects, n_classes: int, rules: LabelRules | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Label each patch of one image.

    Returns:
        ``(labels, why)``: int16 ``(P,)`` with a class index in ``[0, n_classes)``, ``n_classes`` for background or
        :data:`DROPPED`; and uint8 reason codes (:data:`WHY_NAMES`).
    """
    r = rules or LabelRules()
    patches = np.asarray(patches)
    n = len(patches)
    labels = np.full(n, n_classes, dtype=np.int16)
    why = np.full(n, WHY_BACKGROUND, dtype=np.uint8)
    if n == 0 or len(objects.classes) == 0:
        return labels, why
    inter = intersections(patches, objects.boxes)  # (P, O)
    p_area = ((patches[:, 2] - patches[:, 0]) * (patches[:, 3] - patches[:, 1])).astype(np.float64)[:, None]
    b = objects.boxes
    b_area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    tol_p, tol_b = _EPS * p_area, _EPS * b_area
    match = (inter >= r.patch_fraction * p_area - tol_p) & (inter >= r.box_fraction * b_area - tol_b) & (inter > 0)
    if r.overlap_min > 0:
        overlap = (inter >= r.overlap_min * p_area - tol_p) & (inter > 0)
    else:
        overlap = inter > 0
    overlap |= match
    onehot = np.zeros((len(objects.classes), n_classes), dtype=bool)
    onehot[np.arange(len(objects.classes)), objects.classes] = True
    classes_matched = (match.astype(np.int64) @ onehot.astype(np.int64)) > 0  # (P, C)
    n_labels = classes_matched.sum(axis=1)
    n_overlap = overlap.sum(axis=1)
    n_match = match.sum(axis=1)
    positive = (n_labels == 1) & (n_match == 1) & (n_overlap <= 1)
    labels[positive] = np.argmax(classes_matched[positive], axis=1).astype(np.int16)
    why[positive] = WHY_POSITIVE
    ambiguous = (n_labels == 1) & ~positive
    if r.ambiguous == "drop":
        labels[ambiguous] = DROPPED
    why[ambiguous] = WHY_AMBIGUOUS
    two = n_labels >= 2
    labels[two] = DROPPED
    why[two] = WHY_TWO_LABELS
    if r.difficult == "drop" and objects.difficult.any():
        touched = (overlap[:, objects.difficult]).any(axis=1) & ~two
        labels[touched] = DROPPED
        why[touched] = WHY_DIFFICULT
    return labels, why


def subsample_background(labels: np.ndarray, background: int, rate: float, seed: int) -> np.ndarray:
    """Boolean mask over ``labels``: every non-background, non-dropped patch, plus exactly ``round(rate·N)`` of the
    ``N`` background patches chosen uniformly without replacement with ``seed``."""
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"background rate must be in [0, 1], got {rate}")
    labels = np.asarray(labels)
    keep = (labels >= 0) & (labels != background)
    bg = np.flatnonzero(labels == background)
    n_keep = int(round(rate * len(bg)))
    if n_keep:
        rng = np.random.default_rng(seed)
        keep[rng.choice(bg, size=n_keep, replace=False)] = True
    return keep


def label_counts(labels: np.ndarray, why: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Counts for records and progress lines: per reason, and positives per class."""
    labels, why = np.asarray(labels), np.asarray(why)
    per_class = np.bincount(labels[why == WHY_POSITIVE].astype(np.int64), minlength=len(classes))
    return {
        "patches": int(len(labels)),
        **{name: int((why == code).sum()) for code, name in enumerate(WHY_NAMES)},
        "dropped": int((labels == DROPPED).sum()),
        "positives_per_class": {c: int(v) for c, v in zip(classes, per_class, strict=True)},
    }
