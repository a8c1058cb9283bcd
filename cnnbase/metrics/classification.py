"""Single-label accuracies and multi-label ROC AUC.

Which accuracy a benchmark reports is part of its protocol (PROTOCOLS.md section 6.7): Razavian et al. 2014
report MIT-67 as the mean of the confusion-matrix diagonal (:func:`mean_class_accuracy`); the Kornblith
protocol uses top-1 (:func:`accuracy`) for most sets and mean per-class accuracy for Aircraft, Pets,
Caltech-101 and Flowers-102. UIUC attributes are reported as ROC AUC per attribute and its mean
(:func:`mean_auc`).

Class labels are integer indices ``0 .. n_classes-1``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from .voc import _binary_inputs

__all__ = [
    "accuracy",
    "confusion_matrix",
    "mean_auc",
    "mean_class_accuracy",
    "per_class_accuracy",
    "roc_auc",
]


def _nanmean(values: object) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there is none."""
    v = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(v)) if v.size else float("nan")


def _columnwise(fn: Callable[[np.ndarray, np.ndarray], float], scores: object, labels: object) -> np.ndarray:
    """Apply a one-class metric to every column of ``(n, C)`` scores/labels; a 1-D pair is one column."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.shape != y.shape or s.ndim not in (1, 2):
        raise ValueError(
            f"scores and labels must both be (n_samples, n_classes) (or both (n,)), got {s.shape} and {y.shape}"
        )
    if s.ndim == 1:
        s, y = s[:, None], y[:, None]
    return np.array([fn(s[:, c], y[:, c]) for c in range(s.shape[1])], dtype=np.float64)


def _class_inputs(
    y_true: object, y_pred: object, n_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate integer class indices; infer ``n_classes`` as max label + 1 when not given."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred must be 1-D of the same length, got shapes {t.shape} and {p.shape}"
        )
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class indices 0..n_classes-1, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} holds a negative class index ({a.min()}); classes are 0..n_classes-1")
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    top = int(max(t.max(initial=-1), p.max(initial=-1)))
    if top >= n_classes:
        raise ValueError(
            f"class index {top} is out of range for n_classes={n_classes}; pass the right n_classes"
        )
    return t.astype(np.int64), p.astype(np.int64), int(n_classes)


def accuracy(y_true: object, y_pred: object) -> float:
    """Top-1 accuracy: the fraction of samples whose predicted class is the true one.

    Official definition: "overall accuracy" / top-1, e.g. the Kornblith-protocol datasets (Food-101,
    CIFAR-10/100, Birdsnap, SUN397, Cars, DTD; PROTOCOLS.md section 6.7); sklearn's ``accuracy_score``.

    Args:
        y_true: ``(n,)`` integer class indices.
        y_pred: ``(n,)`` integer class indices.

    Returns:
        A fraction in [0, 1]; NaN for zero samples.

    Raises:
        ValueError: shapes differ or labels are not non-negative integers.

    Example:
        >>> accuracy([0, 0, 0, 1], [0, 0, 1, 1])
        0.75
    """
    t, p, _ = _class_inputs(y_true, y_pred, None)
    return float(np.mean(t == p)) if t.size else float("nan")


def confusion_matrix(y_true: object, y_pred: object, n_classes: int | None = None) -> np.ndarray:
    """Counts ``M[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Args:
        y_true: ``(n,)`` integer class indices.
        y_pred: ``(n,)`` integer class indices.
        n_classes: number of classes; default: largest index seen + 1.

    Returns:
        ``(n_classes, n_classes)`` int64 array; rows are true classes (sklearn's convention).

    Raises:
        ValueError: shapes differ, labels are not non-negative integers, or an index is >= ``n_classes``.

    Example:
        >>> confusion_matrix([0, 0, 0, 1], [0, 0, 1, 1]).tolist()
        [[2, 1], [0, 1]]
    """
    t, p, c = _class_inputs(y_true, y_pred, n_classes)
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.int64)


def per_class_accuracy(y_true: object, y_pred: object, n_classes: int | None = None) -> np.ndarray:
    """Per-class accuracy (recall): the diagonal of the row-normalised confusion matrix.

    Args:
        y_true: ``(n,)`` integer class indices.
        y_pred: ``(n,)`` integer class indices.
        n_classes: number of classes; default: largest index seen + 1.

    Returns:
        ``(n_classes,)`` float64; NaN for a class with no sample in ``y_true`` (its row is empty).

    Raises:
        ValueError: as :func:`confusion_matrix`.

    Example:
        >>> per_class_accuracy([0, 0, 0, 1], [0, 0, 1, 1], n_classes=3).round(3).tolist()
        [0.667, 1.0, nan]
    """
    m = confusion_matrix(y_true, y_pred, n_classes)
    support = m.sum(axis=1)
    out = np.full(m.shape[0], np.nan)
    present = support > 0
    out[present] = np.diag(m)[present] / support[present]
    return out


def mean_class_accuracy(y_true: object, y_pred: object, n_classes: int | None = None) -> float:
    """Mean per-class accuracy: the mean of the diagonal of the row-normalised confusion matrix.

    Official definition: Razavian et al. 2014 for MIT-67 (mean of the confusion-matrix diagonal, PROTOCOLS.md
    sections 1.3 and 6.7) and the Kornblith protocol's "mean per-class accuracy" for Aircraft,
    Pets, Caltech-101 and Flowers-102. Equals sklearn's ``balanced_accuracy_score`` when every class occurs.

    Classes absent from ``y_true`` have an empty confusion-matrix row and are excluded from the mean (they
    still count as wrong predictions for the classes whose samples were predicted as them).

    Args:
        y_true: ``(n,)`` integer class indices.
        y_pred: ``(n,)`` integer class indices.
        n_classes: number of classes; only checks the range (absent classes do not enter the mean).

    Returns:
        A fraction in [0, 1]; NaN for zero samples.

    Raises:
        ValueError: as :func:`confusion_matrix`.

    Example:
        >>> round(mean_class_accuracy([0, 0, 0, 1], [0, 0, 1, 1]), 4)  # (2/3 + 1/1) / 2
        0.8333
    """
    return _nanmean(per_class_accuracy(y_true, y_pred, n_classes))


def roc_auc(scores: object, labels: object) -> float:
    """Area under the ROC curve of one class (or attribute), with ``{1, -1, 0}`` labels.

    Official definition: the Mann-Whitney statistic, i.e. the probability that a random positive scores
    higher than a random negative, a tie counting 1/2. This is the exact area under the ROC curve with tied
    scores as one threshold, the same number as sklearn's ``roc_auc_score`` (``sklearn/metrics/_ranking.py``)
    on the non-ignored samples. Razavian et al. 2014 (Table 5) report UIUC attributes as AUC.

    Args:
        scores: ``(n,)`` confidences, higher = more likely positive. NaN is rejected.
        labels: ``(n,)`` in ``{1, -1, 0}``: positive, negative, ignored.

    Returns:
        A fraction in [0, 1]; NaN unless there is at least one positive and one negative.

    Raises:
        ValueError: shapes differ, labels outside ``{1, -1, 0}``, or NaN scores.

    Example:
        >>> roc_auc([0.9, 0.8, 0.8, 0.1], [1, 1, -1, -1])  # (1 + 1 + 1/2 + 1) / 4
        0.875
    """
    s, y = _binary_inputs(scores, labels)
    pos, neg = s[y > 0], s[y < 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    both = np.concatenate((pos, neg))
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    u = mid_rank[inverse[: pos.size]].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def mean_auc(scores: object, labels: object) -> float:
    """Mean over classes (attributes) of :func:`roc_auc`; classes without both a positive and a negative are skipped.

    Official definition: "mAUC" as reported for UIUC 64 attributes (Farhadi et al. 2009; Razavian et al.
    2014, Table 5): the unweighted mean of the per-attribute ROC AUC.

    Args:
        scores: ``(n, C)`` confidences (or ``(n,)`` for one class).
        labels: ``(n, C)`` in ``{1, -1, 0}`` (0 = ignored), same shape as ``scores``.

    Returns:
        A fraction in [0, 1]; NaN if no class has both a positive and a negative.

    Raises:
        ValueError: shapes differ, labels outside ``{1, -1, 0}``, or NaN scores.

    Example:
        >>> mean_auc([[0.9, 0.1], [0.2, 0.8], [0.4, 0.5]], [[1, -1], [-1, 0], [-1, 0]])  # 2nd: no positive
        1.0
    """
    return _nanmean(_columnwise(roc_auc, scores, labels))
