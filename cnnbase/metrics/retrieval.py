"""Instance-retrieval metrics: Oxford/Paris AP, revisited ROxford/RParis mAP, Holidays mAP, UKBench N-S score.

Conventions shared by every function here:

* A *ranking* is a 1-D int array of database indices, best first. ``ranks`` is ``(n_queries, k)``: row ``q``
  is query ``q``'s ranking. ``k`` may be smaller than the database (a top-k shortlist): positives that are not
  retrieved add nothing, but still count in the recall denominator.
* ``gnd`` is a list with one dict per query (row of ``ranks``) of int arrays of database indices, as produced
  by :mod:`cnnbase.datasets`: ``"positives"`` and ``"junk"`` (Oxford/Paris), ``"easy"``, ``"hard"`` and
  ``"junk"`` (revisited), and ``"self"`` (the query image's own database index, Holidays and UKBench).
* Every AP here is the same trapezoid rule (Oxford ``compute_ap.cpp``, Holidays ``score_ap_from_ranks_1``,
  revisitop ``compute_ap``): with precision 1 at rank 0, the area of the trapezoids between consecutive
  (recall, precision) points. Junk images are removed from the ranking: they neither count nor advance the
  rank.

A query without positives has no AP: it is NaN in the per-query arrays and skipped by the means (revisitop
does the same; the Oxford and Holidays scripts would divide by zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .classification import _nanmean

__all__ = [
    "MetricResult",
    "holidays_aps",
    "holidays_map",
    "oxford_ap",
    "oxford_aps",
    "oxford_map",
    "revisited_map",
    "ukbench_counts",
    "ukbench_score",
]


@dataclass(frozen=True, eq=False)
class MetricResult:
    """What every registered metric returns (and :func:`revisited_map`, which has several headline numbers).

    Attributes:
        value: the headline number as a fraction in [0, 1] (the N-S score in [0, 4] for UKBench).
        per_item: per class (classification, multilabel) or per query (retrieval), NaN where undefined
            (a class absent from the test set, a query without positives); a read-only float64 array.
        extra: other numbers computed on the same inputs, e.g. ``"voc_area_map"`` next to VOC07, the
            Easy/Medium/Hard mAPs and mP@k of the revisited protocol.

    Example:
        >>> r = MetricResult(0.5, [0.25, 0.75], {"other": 1})
        >>> r.value, r.per_item.tolist(), r.extra
        (0.5, [0.25, 0.75], {'other': 1.0})
    """

    value: float
    per_item: np.ndarray | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        if self.per_item is not None:
            per_item = np.array(self.per_item, dtype=np.float64)  # a copy, so freezing it is safe
            per_item.setflags(write=False)
            object.__setattr__(self, "per_item", per_item)
        object.__setattr__(self, "extra", {str(k): float(v) for k, v in self.extra.items()})


# ----------------------------------------------------------------------------------------------- helpers


def _ids(values: object, what: str) -> np.ndarray:
    """A (possibly empty) 1-D int64 array of database indices."""
    a = np.asarray(values if values is not None else [])
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must hold integer database indices, got dtype {a.dtype}")
    return a.astype(np.int64).ravel()


def _ranking(ranking: object) -> np.ndarray:
    r = np.asarray(ranking)
    if r.ndim != 1:
        raise ValueError(f"a ranking must be 1-D (database indices, best first), got shape {r.shape}")
    return _ids(r, "the ranking")


def _ranks(
    ranks: object, gnd: Sequence[Mapping[str, object]] | None, min_k: int = 0, needs: tuple[str, ...] = ("positives",)
) -> np.ndarray:
    """``ranks`` checked as an int ``(n_queries, k)`` array, and ``gnd`` as one entry per row holding ``needs``
    (a ground truth of another benchmark's layout must not score as empty sets)."""
    r = np.asarray(ranks)
    if r.ndim != 2:
        raise ValueError(
            f"ranks must be (n_queries, k) with row q = query q's database indices best first, got shape {r.shape}"
            " (revisitop's ranks are (db_size, n_queries): pass ranks.T)"
        )
    if r.size and not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranks must hold integer database indices, got dtype {r.dtype}")
    if r.size and r.min() < 0:
        raise ValueError(f"ranks hold a negative database index ({r.min()})")
    if gnd is not None and len(gnd) != r.shape[0]:
        raise ValueError(
            f"ranks has {r.shape[0]} rows (queries) but gnd has {len(gnd)} entries; they must match"
        )
    if r.shape[1] < min_k:
        raise ValueError(f"ranks has {r.shape[1]} columns; at least {min_k} results per query are needed")
    for q, g in enumerate(gnd or ()):
        if missing := [k for k in needs if k not in g]:
            raise ValueError(
                f"gnd[{q}] has no {', '.join(map(repr, missing))} (its keys: {', '.join(map(repr, g)) or 'none'}); this "
                f"metric needs {', '.join(map(repr, needs))} per query: is the ground truth another benchmark's?"
            )
    return r.astype(np.int64)


def _positive_ranks(ranking: np.ndarray, positives: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based positions of the positives in the ranking once the junk images are removed from it."""
    if junk.size:
        ranking = ranking[~np.isin(ranking, junk)]
    return np.flatnonzero(np.isin(ranking, positives))


def _trapezoid_ap(pos_ranks: np.ndarray, n_positives: int) -> float:
    """revisitop ``compute_ap`` / Holidays ``score_ap_from_ranks_1``, vectorised.

    The j-th retrieved positive (0-based) at rank r adds a trapezoid of width 1/n_positives between the
    precision before it, j/r (1 when r = 0), and after it, (j+1)/(r+1).
    """
    j = np.arange(pos_ranks.size, dtype=np.float64)
    r = pos_ranks.astype(np.float64)
    before = np.where(r == 0, 1.0, j / np.maximum(r, 1.0))
    after = (j + 1.0) / (r + 1.0)
    return float(np.sum((before + after) / 2.0) / n_positives)


# ----------------------------------------------------------------------------------------------- Oxford


def oxford_ap(ranking: object, positives: object, junk: object = ()) -> float:
    """Average precision of one Oxford5k / Paris6k query (original protocol).

    Official definition: ``compute_ap.cpp`` from the Oxford Buildings page (VGG; copy in
    ``oddconcepts/oxford-benchmark``), function ``compute_ap``::

        old_recall = 0; old_precision = 1; ap = 0; j = 0
        for each ranked image: if junk, continue (neither counts nor advances the rank)
            if positive: intersect_size++
            recall = intersect_size / |pos|; precision = intersect_size / (j + 1)
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall = recall; old_precision = precision; j++

    Positives are ``_good`` and ``_ok``; junk is ``_junk``. The C++ accumulates in single precision; this
    is float64 (differences are below 1e-6).

    Args:
        ranking: ``(k,)`` database indices, best first; may be a top-k prefix of the full ranking.
        positives: database indices of the positives (a set: duplicates are ignored). A positive that is
            also junk is skipped but still counts in the recall denominator, as in the C++.
        junk: database indices to skip.

    Returns:
        The AP as a fraction in [0, 1]; NaN when there is no positive.

    Raises:
        ValueError: non-integer indices or a ranking that is not 1-D.

    Example:
        >>> round(oxford_ap([0, 1, 2, 3, 4], positives=[1, 3], junk=[2]), 4)  # 2 skipped: hits at ranks 1, 2
        0.4167
    """
    pos = np.unique(_ids(positives, "positives"))
    if pos.size == 0:
        return float("nan")
    return _trapezoid_ap(_positive_ranks(_ranking(ranking), pos, _ids(junk, "junk")), pos.size)


def oxford_aps(ranks: object, gnd: Sequence[Mapping[str, object]]) -> np.ndarray:
    """Per-query :func:`oxford_ap` over a ``(n_queries, k)`` ranks array.

    Args:
        ranks: ``(n_queries, k)`` int; row q = query q's database indices, best first.
        gnd: one dict per query with int arrays ``"positives"`` and (optional) ``"junk"``.

    Returns:
        ``(n_queries,)`` float64, NaN for a query without positives.

    Raises:
        ValueError: bad shapes, or ``gnd`` not one entry per row, or an entry without ``"positives"``.

    Example:
        >>> oxford_aps([[0, 1], [1, 0]], [{"positives": [0]}, {"positives": []}]).tolist()
        [1.0, nan]
    """
    r = _ranks(ranks, gnd)
    return np.array(
        [oxford_ap(r[q], g["positives"], g.get("junk", ())) for q, g in enumerate(gnd)], dtype=np.float64
    )


def oxford_map(ranks: object, gnd: Sequence[Mapping[str, object]]) -> float:
    """Oxford5k / Paris6k mAP: the mean of :func:`oxford_ap` over the queries that have positives.

    Official definition: ``compute_ap.cpp`` (see :func:`oxford_ap`), averaged over the 55 queries.

    Args:
        ranks: ``(n_queries, k)`` int; row q = query q's database indices, best first.
        gnd: one dict per query with int arrays ``"positives"`` (good ∪ ok) and ``"junk"``.

    Returns:
        A fraction in [0, 1]; NaN if no query has positives.

    Raises:
        ValueError: bad shapes, or ``gnd`` not one entry per row, or an entry without ``"positives"``.

    Example:
        >>> oxford_map([[0, 1, 2], [2, 1, 0]], [{"positives": [0]}, {"positives": [1], "junk": [2]}])
        1.0
    """
    return _nanmean(oxford_aps(ranks, gnd))


# ----------------------------------------------------------------------------------------------- revisited

# Each protocol: which gnd keys are positives ("ok") and which are junk (revisitop python/example_evaluate.py).
_REVISITED_PROTOCOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def revisited_map(
    ranks: object, gnd: Sequence[Mapping[str, object]], kappas: Iterable[int] = (1, 5, 10)
) -> MetricResult:
    """Revisited ROxford5k / RParis6k evaluation: Easy, Medium and Hard mAP and mP@k.

    Official definition: ``filipradenovic/revisitop``, ``python/evaluate.py`` (``compute_ap``,
    ``compute_map``) with the protocols of ``python/example_evaluate.py``:

    * Easy: ok = easy, junk = junk ∪ hard;
    * Medium: ok = easy ∪ hard, junk = junk;
    * Hard: ok = hard, junk = junk ∪ easy.

    Per query, junk images are removed from the ranking (``compute_map`` shifts each positive's position
    down by the number of junk images before it) and AP is the trapezoid of ``compute_ap``. A query without
    ok images is skipped for that protocol (NaN, left out of the means). mP@k is revisitop's: with ``pos``
    the 1-based shifted positions of the retrieved positives, ``kq = min(max(pos), k)`` and
    ``P@k = #(pos <= kq) / kq``, i.e. k is capped at the rank of the last retrieved positive.

    CONVENTION: ``ranks`` is ``(n_queries, k)`` (row q = query q's ranking). revisitop's ``ranks`` is the
    transpose, ``(db_size, n_queries)``: pass ``ranks.T`` of a revisitop array. ``k`` may be smaller than the
    database. A query whose ranking contains none of its positives has AP 0 and P@k 0 (revisitop, which
    expects full rankings, would fail on ``max`` of an empty array there).

    The README of revisitop gives ready-made expected values for its example features (e.g. roxford5k
    R-GeM: mAP E 84.81, M 64.67, H 38.47), to check an end-to-end pipeline.

    Args:
        ranks: ``(n_queries, k)`` int; row q = query q's database indices, best first.
        gnd: one dict per query with int arrays ``"easy"``, ``"hard"`` and ``"junk"`` (revisitop's
            ``cfg['gnd']``; other keys such as ``"bbx"`` are ignored). The three sets are disjoint there.
        kappas: the k of mP@k.

    Returns:
        ``MetricResult`` with ``value`` = Medium mAP, ``per_item`` = Medium AP per query (NaN if skipped) and
        ``extra`` = ``easy_map``, ``medium_map``, ``hard_map`` and ``{easy,medium,hard}_mp@{k}`` for each k,
        all fractions in [0, 1] (revisitop prints them × 100).

    Raises:
        ValueError: bad shapes, ``gnd`` not one entry per row or without the three lists, or a k < 1.

    Example:
        >>> gnd = [{"easy": [0], "hard": [2], "junk": [4]}]
        >>> r = revisited_map([[4, 2, 1, 0, 3, 5]], gnd, kappas=(1, 5))
        >>> round(r.extra["easy_map"], 4), round(r.value, 4), r.extra["hard_map"], r.extra["medium_mp@5"]
        (0.25, 0.7917, 1.0, 0.6666666666666666)
    """
    ks = [int(k) for k in kappas]
    if any(k < 1 for k in ks):
        raise ValueError(f"kappas must be >= 1, got {ks}")
    r = _ranks(ranks, gnd, needs=("easy", "hard", "junk"))
    extra: dict[str, float] = {}
    per_query: dict[str, np.ndarray] = {}
    for name, (ok_keys, junk_keys) in _REVISITED_PROTOCOLS.items():
        aps = np.full(r.shape[0], np.nan)
        prs = np.full((r.shape[0], len(ks)), np.nan)
        for q, g in enumerate(gnd):
            ok = np.unique(np.concatenate([_ids(g.get(key), key) for key in ok_keys]))
            if ok.size == 0:
                continue  # no positive images: skipped from the average
            junk = np.concatenate([_ids(g.get(key), key) for key in junk_keys])
            pos = _positive_ranks(r[q], ok, junk)
            aps[q] = _trapezoid_ap(pos, ok.size)
            if pos.size == 0:
                prs[q] = 0.0
                continue
            pos1 = pos + 1  # 1-based
            for j, k in enumerate(ks):
                kq = min(int(pos1[-1]), k)
                prs[q, j] = np.count_nonzero(pos1 <= kq) / kq
        per_query[name] = aps
        extra[f"{name}_map"] = _nanmean(aps)
        for j, k in enumerate(ks):
            extra[f"{name}_mp@{k}"] = _nanmean(prs[:, j])
    return MetricResult(extra["medium_map"], per_query["medium"], extra)


# ----------------------------------------------------------------------------------------------- Holidays


def holidays_aps(ranks: object, gnd: Sequence[Mapping[str, object]]) -> np.ndarray:
    """Per-query INRIA Holidays AP; the query image itself is ignored wherever it is returned.

    Official definition: ``holidays_map.py`` from ``eval_holidays.tgz`` (INRIA 2008; Python 3 copy in
    ``lulmer/deep_image_retrieval``): results sorted by rank; ``if returned_name == query_name:
    rank_shift = -1`` (the query is skipped and later ranks move up by one), other images in the query's
    group are true positives at ``rank + rank_shift``; AP = ``score_ap_from_ranks_1`` (the trapezoid of
    :func:`oxford_ap`) with ``nres`` = the number of other images in the group.

    Equivalently, this is :func:`oxford_ap` with the query's own index as junk. Holidays has no junk of
    its own; a non-empty ``"junk"`` entry, if given, is skipped in the same way.

    Args:
        ranks: ``(n_queries, k)`` int; row q = query q's database indices, best first (may include the query).
        gnd: one dict per query with ``"positives"`` (the other images of its group; the query's own index
            is dropped from it if present) and ``"self"`` (the query's database index; may be absent when
            the query is not in the database).

    Returns:
        ``(n_queries,)`` float64, NaN for a query without positives.

    Raises:
        ValueError: bad shapes, or ``gnd`` not one entry per row, or an entry without ``"positives"``.

    Example:
        >>> holidays_aps([[3, 0, 1, 4, 2]], [{"self": 0, "positives": [1, 2]}]).round(4).tolist()
        [0.3333]
    """
    r = _ranks(ranks, gnd)
    aps = np.full(r.shape[0], np.nan)
    for q, g in enumerate(gnd):
        me = _ids(g.get("self"), "self")
        positives = np.setdiff1d(_ids(g["positives"], "positives"), me)
        aps[q] = oxford_ap(r[q], positives, np.concatenate((me, _ids(g.get("junk"), "junk"))))
    return aps


def holidays_map(ranks: object, gnd: Sequence[Mapping[str, object]]) -> float:
    """INRIA Holidays mAP: the mean of :func:`holidays_aps` over the queries (500 in the official set).

    Official definition: ``holidays_map.py`` (``sum_ap / n``); see :func:`holidays_aps`. Queries without
    positives (none in the official set) are skipped instead of dividing by zero.

    Args:
        ranks: ``(n_queries, k)`` int; row q = query q's database indices, best first.
        gnd: one dict per query with ``"positives"`` and ``"self"``.

    Returns:
        A fraction in [0, 1]; NaN if no query has positives.

    Raises:
        ValueError: bad shapes, or ``gnd`` not one entry per row, or an entry without ``"positives"``.

    Example:
        >>> gnd = [{"self": 0, "positives": [1]}, {"self": 1, "positives": [0]}]
        >>> holidays_map([[0, 1, 2], [1, 2, 0]], gnd)  # (1 + (0 + 1/2) / 2) / 2
        0.625
    """
    return _nanmean(holidays_aps(ranks, gnd))


# ----------------------------------------------------------------------------------------------- UKBench


def ukbench_counts(ranks: object, gnd: Sequence[Mapping[str, object]] | None = None) -> np.ndarray:
    """Per query, how many of the top-4 results belong to the query's group (the query itself counts).

    Official definition: the UKBench N-S score (Nistér & Stewénius 2006); reference implementation
    ``jesolem/PCV``, ``PCV/imagesearch/imagesearch.py``, ``compute_ukbench_score``:
    ``(pos[i] // 4) == (i // 4)`` over the first 4 results of query i.

    Args:
        ranks: ``(n_queries, k)`` int with ``k >= 4``; row q = query q's database indices, best first.
        gnd: optional; one dict per query with ``"positives"`` and ``"self"``: the group is positives ∪
            {self}. Without it, query i is database image i and the groups are ``index // 4`` (the official
            layout of the 10,200 images).

    Returns:
        ``(n_queries,)`` int64 in 0..4.

    Raises:
        ValueError: fewer than 4 results per query, bad shapes, or ``gnd`` not one entry per row (each with ``"positives"``).

    Example:
        >>> ukbench_counts([[0, 1, 5, 2], [1, 0, 2, 3]]).tolist()
        [3, 4]
    """
    r = _ranks(ranks, gnd, min_k=4)[:, :4]
    if gnd is None:
        return np.count_nonzero(r // 4 == (np.arange(r.shape[0]) // 4)[:, None], axis=1).astype(np.int64)
    counts = np.zeros(r.shape[0], dtype=np.int64)
    for q, g in enumerate(gnd):
        group = np.union1d(_ids(g["positives"], "positives"), _ids(g.get("self"), "self"))
        counts[q] = np.count_nonzero(np.isin(r[q], group))
    return counts


def ukbench_score(ranks: object, gnd: Sequence[Mapping[str, object]] | None = None) -> float:
    """UKBench N-S score: the mean over queries of :func:`ukbench_counts` (between 0 and 4).

    Official definition: ``compute_ukbench_score`` in ``jesolem/PCV`` (``sum(score) / nbr_images``), with
    every database image used as a query. Razavian et al. 2014 report "recall at top four" in %, which is
    this score × 25.

    Args:
        ranks: ``(n_queries, k)`` int with ``k >= 4``; row q = query q's database indices, best first.
        gnd: optional groups, see :func:`ukbench_counts`.

    Returns:
        The N-S score in [0, 4]; NaN for zero queries.

    Raises:
        ValueError: as :func:`ukbench_counts`.

    Example:
        >>> ukbench_score([[0, 1, 5, 2], [1, 0, 2, 3]])
        3.5
    """
    counts = ukbench_counts(ranks, gnd)
    return float(counts.mean()) if counts.size else float("nan")
