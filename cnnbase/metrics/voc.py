"""PASCAL VOC classification average precision: the VOC2007 11-point metric and the VOC2010+ area metric.

Both take one class's confidences and its ``{1, -1, 0}`` labels from ``ImageSets/Main/<cls>_test.txt``
(1 = present, -1 = absent, 0 = "difficult only") and follow the official MATLAB devkits line by line.

Difficult images are removed before ranking. That gives exactly the devkit's numbers: the devkit ranks them
but counts them neither as true nor as false positives (``tp=gt(si)>0; fp=gt(si)<0``), so a difficult image
only repeats the previous point of the precision/recall curve, which changes neither metric.

Ties: the devkit ranks with ``[so,si]=sort(-out)``; MATLAB's ``sort`` is stable, so tied confidences keep the
order in which the images appear in the input. We use the same stable sort, so the input order decides ties
here too (an AP with ties is therefore not invariant to shuffling the images; sklearn's
``average_precision_score`` instead treats a tie as one threshold and gives a different number, see
PROTOCOLS.md section 6.6). Never use sklearn's AP for VOC numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["voc07_ap", "voc_area_ap"]

# MATLAB's ``0:0.1:1``, bit for bit. MATLAB's colon operator computes the first half of the vector as
# a + k*d and the second half as b - k*d (MathWorks technical solution 1-4FLI96, "How does the COLON operator
# work?"), so its 4th element is 3*0.1 = 0.30000000000000004 while its 7th and 8th are exactly 0.6 and 0.7.
# Consequence: a recall of exactly 3/10 (= 0.29999999999999999) does not reach the t = 0.3 threshold in the
# official devkit. ``np.arange(0., 1.1, 0.1)`` (py-faster-rcnn's ``voc_ap(..., use_07_metric=True)``) agrees
# at 0.3 but has 0.6000000000000001 and 0.7000000000000001, so it differs from the devkit when a recall is
# exactly 0.6 or 0.7. We follow the devkit.
_VOC07_THRESHOLDS = np.array([0.1 * k for k in range(6)] + [1.0 - 0.1 * k for k in range(4, -1, -1)])


def _binary_inputs(scores: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate one class's scores and ``{1, -1, 0}`` labels; return them as float64 / int64 1-D arrays."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ValueError(
            f"scores and labels must be 1-D arrays of the same length, got shapes {s.shape} and {y.shape}; "
            "pass one class (one column) at a time"
        )
    if y.dtype == np.bool_:
        raise ValueError("labels must be 1 / -1 / 0 (difficult), not booleans; pass np.where(labels, 1, -1)")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s); a NaN cannot be ranked")
    if y.size and not np.isin(y, (-1, 0, 1)).all():
        bad = sorted({v.item() for v in np.unique(y[~np.isin(y, (-1, 0, 1))])})[:5]
        raise ValueError(f"labels must be 1 (positive), -1 (negative) or 0 (difficult, ignored); got {bad}")
    return s, y.astype(np.int64)


def _precision_recall(scores: object, labels: object) -> tuple[np.ndarray, np.ndarray] | None:
    """The devkit's recall and precision after each ranked image (difficult ones removed); None if no positive."""
    s, y = _binary_inputs(scores, labels)
    keep = y != 0
    s, y = s[keep], y[keep]
    npos = int(np.count_nonzero(y > 0))
    if npos == 0:
        return None
    y = y[np.argsort(-s, kind="stable")]  # [so,si]=sort(-out): stable, ties keep input order
    tp = np.cumsum(y > 0)
    fp = np.cumsum(y < 0)
    return tp / npos, tp / (tp + fp)


def voc07_ap(scores: object, labels: object) -> float:
    """VOC2007 11-point interpolated average precision of one class.

    Official definition: the VOC2007 devkit, ``VOCcode/VOCevalcls.m``::

        [so,si]=sort(-out); tp=gt(si)>0; fp=gt(si)<0;
        fp=cumsum(fp); tp=cumsum(tp); rec=tp/sum(gt>0); prec=tp./(fp+tp);
        ap=0;
        for t=0:0.1:1
            p=max(prec(rec>=t)); if isempty(p), p=0; end
            ap=ap+p/11;
        end

    The thresholds are MATLAB's ``0:0.1:1`` bit for bit (its 4th value is 0.30000000000000004, so a recall of
    exactly 0.3 does not count for t = 0.3, as in the devkit), and the 11 terms are accumulated in the
    devkit's order. Ties keep the input order (MATLAB's stable sort). Difficult images (label 0) are removed
    before ranking, which leaves the devkit's value unchanged.

    Args:
        scores: ``(n,)`` confidences, higher = more likely positive. NaN is rejected.
        labels: ``(n,)`` in ``{1, -1, 0}``: positive, negative, difficult (ignored).

    Returns:
        The AP as a fraction in [0, 1]. NaN when there is no positive (the devkit would return 0 there, a
        number that means nothing; NaN lets a mean over classes skip the class).

    Raises:
        ValueError: shapes differ, labels outside ``{1, -1, 0}``, or NaN scores.

    Example:
        >>> round(voc07_ap([0.9, 0.8, 0.7], [1, -1, 1]), 4)  # (6 * 1 + 5 * 2/3) / 11
        0.8485
    """
    pr = _precision_recall(scores, labels)
    if pr is None:
        return float("nan")
    rec, prec = pr
    envelope = np.maximum.accumulate(prec[::-1])[::-1]  # envelope[i] = max(prec[i:])
    first = np.searchsorted(rec, _VOC07_THRESHOLDS, side="left")  # first i with rec[i] >= t (rec is sorted)
    ap = 0.0
    for i in first.tolist():
        ap += (float(envelope[i]) if i < rec.size else 0.0) / 11
    return ap


def voc_area_ap(scores: object, labels: object) -> float:
    """VOC2010+ average precision of one class: the area under the monotone precision envelope.

    Official definition: the VOC2010-2012 devkits, ``VOCcode/VOCevalcls.m`` (same precision/recall as 2007)
    followed by ``VOCcode/VOCap.m``::

        mrec=[0 ; rec ; 1]; mpre=[0 ; prec ; 0];
        for i=numel(mpre)-1:-1:1, mpre(i)=max(mpre(i),mpre(i+1)); end
        i=find(mrec(2:end)~=mrec(1:end-1))+1;
        ap=sum((mrec(i)-mrec(i-1)).*mpre(i));

    This is what FAIR's ``fair_self_supervision_benchmark`` and VISSL report as "VOC07 SVM mAP"
    (``calculate_ap``), and py-faster-rcnn's ``voc_ap(..., use_07_metric=False)``. Ties keep the input order;
    difficult images (label 0) are removed before ranking, which leaves the devkit's value unchanged.

    Args:
        scores: ``(n,)`` confidences, higher = more likely positive. NaN is rejected.
        labels: ``(n,)`` in ``{1, -1, 0}``: positive, negative, difficult (ignored).

    Returns:
        The AP as a fraction in [0, 1]; NaN when there is no positive (as in the devkit, where 0/0 recalls
        make the sum NaN).

    Raises:
        ValueError: shapes differ, labels outside ``{1, -1, 0}``, or NaN scores.

    Example:
        >>> round(voc_area_ap([0.9, 0.8, 0.7], [1, -1, 1]), 4)  # 0.5 * 1 + 0.5 * 2/3
        0.8333
    """
    pr = _precision_recall(scores, labels)
    if pr is None:
        return float("nan")
    rec, prec = pr
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))
