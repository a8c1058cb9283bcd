"""Official evaluation metrics, as pure numpy functions, plus a registry of uniform wrappers.

Two layers:

* **Functions** with the official definitions, each citing the devkit or script it ports:
  :func:`voc07_ap`, :func:`voc_area_ap` (PASCAL VOC); :func:`accuracy`, :func:`mean_class_accuracy`,
  :func:`roc_auc`, :func:`mean_auc`; :func:`oxford_ap`, :func:`revisited_map`, :func:`holidays_map`,
  :func:`ukbench_score` (retrieval).
* **The registry** :data:`METRICS` of :class:`MetricSpec`, whose ``fn`` wraps those functions into one
  signature per kind and returns a :class:`MetricResult` (headline value, per-class or per-query values,
  extra numbers). The runner and the leaderboard only use :func:`compute` and the registry.

Signatures by kind:

* ``"classification"``: ``fn(y_true, y_pred, n_classes=None)``, integer class indices ``(n,)``;
* ``"multilabel"``: ``fn(scores, labels)``, ``(n, C)`` each, labels in ``{1, -1, 0}`` (0 ignored); the value
  is the mean over classes (classes where the metric is undefined are skipped), ``per_item`` is per class;
* ``"retrieval"``: ``fn(ranks, gnd)``, ``ranks`` ``(n_queries, k)`` database indices best first, ``gnd`` one
  dict of int arrays per query; ``per_item`` is per query.

Example:
    >>> from cnnbase.metrics import compute, METRICS
    >>> r = compute("voc07_map", scores=[[0.9], [0.8], [0.7]], labels=[[1], [-1], [1]])
    >>> round(r.value, 4), round(r.extra["voc_area_map"], 4)
    (0.8485, 0.8333)
    >>> METRICS.get("voc07_map").scale
    100.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cnnbase.registry import Registry

from .classification import (
    _columnwise,
    _nanmean,
    accuracy,
    confusion_matrix,
    mean_auc,
    mean_class_accuracy,
    per_class_accuracy,
    roc_auc,
)
from .retrieval import (
    MetricResult,
    holidays_aps,
    holidays_map,
    oxford_ap,
    oxford_aps,
    oxford_map,
    revisited_map,
    ukbench_counts,
    ukbench_score,
)
from .voc import voc07_ap, voc_area_ap

__all__ = [
    "KINDS",
    "METRICS",
    "MetricResult",
    "MetricSpec",
    "accuracy",
    "compute",
    "confusion_matrix",
    "holidays_aps",
    "holidays_map",
    "mean_auc",
    "mean_class_accuracy",
    "oxford_ap",
    "oxford_aps",
    "oxford_map",
    "per_class_accuracy",
    "register_metric",
    "revisited_map",
    "roc_auc",
    "ukbench_counts",
    "ukbench_score",
    "voc07_ap",
    "voc_area_ap",
]

KINDS = ("classification", "multilabel", "retrieval")


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: how to call it and how to display it.

    Attributes:
        name: registry key, e.g. ``"voc07_map"``.
        kind: ``"classification"``, ``"multilabel"`` or ``"retrieval"`` (fixes the signature of ``fn``).
        fn: returns a :class:`MetricResult`; see the module docstring for the signature per kind.
        higher_is_better: True for every metric here.
        scale: display multiplier: 100 for a percentage, 1 for the UKBench N-S score.
        doc: one line for listings (the first line of ``fn``'s docstring by default).
    """

    name: str
    kind: str
    fn: Callable[..., MetricResult]
    higher_is_better: bool = True
    scale: float = 100.0
    doc: str = ""


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(
    name: str, kind: str, *, higher_is_better: bool = True, scale: float = 100.0, doc: str | None = None
) -> Callable[[Callable[..., MetricResult]], Callable[..., MetricResult]]:
    """Decorator: register ``fn`` in :data:`METRICS` as ``name``; a duplicate name raises ValueError.

    Args:
        name: registry key.
        kind: one of :data:`KINDS`.
        higher_is_better: whether larger values are better.
        scale: display multiplier (100 for %, 1 for raw scores).
        doc: listing line; defaults to the first line of the function's docstring.

    Returns:
        The decorator, which returns the function unchanged.

    Raises:
        ValueError: unknown ``kind``.

    Example:
        >>> from cnnbase.metrics import METRICS
        >>> METRICS.list("voc*"), METRICS.get("ukbench_score").kind
        (['voc07_map', 'voc_area_map'], 'retrieval')
    """
    if kind not in KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; use one of {', '.join(KINDS)}")

    def _add(fn: Callable[..., MetricResult]) -> Callable[..., MetricResult]:
        lines = (fn.__doc__ or "").strip().splitlines()
        line = doc if doc is not None else (lines[0] if lines else "")
        METRICS.register(name, MetricSpec(name, kind, fn, higher_is_better, float(scale), line))
        return fn

    return _add


def compute(name: str, **inputs: object) -> MetricResult:
    """Compute the registered metric ``name`` on keyword inputs (see the module docstring per kind).

    Args:
        name: a key of :data:`METRICS`; an unknown name raises :class:`cnnbase.errors.ConfigError` naming
            near matches.
        **inputs: ``y_true``/``y_pred``/``n_classes``, ``scores``/``labels`` or ``ranks``/``gnd``.

    Returns:
        The metric's :class:`MetricResult`.

    Example:
        >>> compute("accuracy", y_true=[0, 1, 1], y_pred=[0, 1, 0]).extra
        {'mean_class_accuracy': 0.75}
    """
    return METRICS.get(name).fn(**inputs)


# ----------------------------------------------------------------------------------------------- classification


def _accuracies(y_true: object, y_pred: object, n_classes: int | None) -> tuple[float, float, np.ndarray]:
    per_class = per_class_accuracy(y_true, y_pred, n_classes)  # also checks the labels against n_classes
    return accuracy(y_true, y_pred), mean_class_accuracy(y_true, y_pred, n_classes), per_class


@register_metric("accuracy", "classification")
def _accuracy_metric(y_true: object, y_pred: object, n_classes: int | None = None) -> MetricResult:
    """Top-1 accuracy (fraction correct); per_item = per-class accuracy; extra: mean_class_accuracy."""
    acc, mca, per_class = _accuracies(y_true, y_pred, n_classes)
    return MetricResult(acc, per_class, {"mean_class_accuracy": mca})


@register_metric("mean_class_accuracy", "classification")
def _mean_class_accuracy_metric(y_true: object, y_pred: object, n_classes: int | None = None) -> MetricResult:
    """Mean per-class accuracy (mean of the confusion-matrix diagonal); per_item = per class; extra: accuracy."""
    acc, mca, per_class = _accuracies(y_true, y_pred, n_classes)
    return MetricResult(mca, per_class, {"accuracy": acc})


# ----------------------------------------------------------------------------------------------- multilabel


@register_metric("voc07_map", "multilabel")
def _voc07_map_metric(scores: object, labels: object) -> MetricResult:
    """PASCAL VOC2007 11-point mAP over classes (VOCevalcls.m); per_item = per-class AP; extra: voc_area_map."""
    aps = _columnwise(voc07_ap, scores, labels)
    return MetricResult(
        _nanmean(aps), aps, {"voc_area_map": _nanmean(_columnwise(voc_area_ap, scores, labels))}
    )


@register_metric("voc_area_map", "multilabel")
def _voc_area_map_metric(scores: object, labels: object) -> MetricResult:
    """PASCAL VOC2010+ area mAP over classes (VOCap.m; VISSL's "VOC07 SVM"); extra: voc07_map."""
    aps = _columnwise(voc_area_ap, scores, labels)
    return MetricResult(_nanmean(aps), aps, {"voc07_map": _nanmean(_columnwise(voc07_ap, scores, labels))})


@register_metric("mean_auc", "multilabel")
def _mean_auc_metric(scores: object, labels: object) -> MetricResult:
    """Mean ROC AUC over classes/attributes (UIUC attributes); per_item = per-class AUC."""
    aucs = _columnwise(roc_auc, scores, labels)
    return MetricResult(_nanmean(aucs), aucs, {})


# ----------------------------------------------------------------------------------------------- retrieval

Gnd = Sequence[Mapping[str, object]]


@register_metric("oxford_map", "retrieval")
def _oxford_map_metric(ranks: object, gnd: Gnd) -> MetricResult:
    """Oxford5k/Paris6k mAP (compute_ap.cpp; gnd: positives, junk); per_item = per-query AP."""
    aps = oxford_aps(ranks, gnd)
    return MetricResult(_nanmean(aps), aps, {})


@register_metric("revisited_map", "retrieval")
def _revisited_map_metric(ranks: object, gnd: Gnd, kappas: Sequence[int] = (1, 5, 10)) -> MetricResult:
    """Revisited ROxford/RParis Medium mAP (revisitop compute_map); extra: E/M/H mAP and mP@k."""
    return revisited_map(ranks, gnd, kappas)


@register_metric("holidays_map", "retrieval")
def _holidays_map_metric(ranks: object, gnd: Gnd) -> MetricResult:
    """INRIA Holidays mAP (holidays_map.py; the query itself ignored); per_item = per-query AP."""
    aps = holidays_aps(ranks, gnd)
    return MetricResult(_nanmean(aps), aps, {})


@register_metric("ukbench_score", "retrieval", scale=1.0)
def _ukbench_score_metric(ranks: object, gnd: Gnd | None = None) -> MetricResult:
    """UKBench N-S score (0-4: top-4 results in the query's group, query counted); per_item = per query."""
    counts = ukbench_counts(ranks, gnd)
    return MetricResult(float(counts.mean()) if counts.size else float("nan"), counts, {})
