"""Property tables for every registered metric, in the style of sklearn/metrics/tests/test_common.py.

Each table lists the metrics that have a property; one test per property runs over its table. A metric
registered in cnnbase.metrics.METRICS but missing from PERFECT (every metric has a best value) or from every
invariance table fails ``test_every_registered_metric_is_classified``, so a new metric cannot be forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cnnbase.metrics import METRICS, MetricResult, compute

SEEDS = [0, 1, 2]

# ------------------------------------------------------------------------------------------------ tables

# the value of a perfect prediction / ranking
PERFECT: dict[str, float] = {
    "accuracy": 1.0,
    "mean_class_accuracy": 1.0,
    "voc07_map": 1.0,
    "voc_area_map": 1.0,
    "mean_auc": 1.0,
    "oxford_map": 1.0,
    "revisited_map": 1.0,
    "holidays_map": 1.0,
    "ukbench_score": 4.0,
}

# the value lies in [0, upper bound] on any input
BOUNDED: dict[str, float] = dict(PERFECT)

# renaming the classes consistently (class labels for classification, column order for multilabel)
# permutes per_item and leaves the value unchanged
CLASS_PERMUTATION_INVARIANT = {"accuracy", "mean_class_accuracy", "voc07_map", "voc_area_map", "mean_auc"}

# a strictly increasing transform of the scores changes nothing (ties stay ties, order stays order)
MONOTONE_SCORE_INVARIANT = {"voc07_map", "voc_area_map", "mean_auc"}

# shuffling the samples changes nothing when there are no tied scores
SAMPLE_ORDER_INVARIANT = {"accuracy", "mean_class_accuracy", "voc07_map", "voc_area_map", "mean_auc"}

# shuffling the queries (rows of ranks with their gnd) permutes per_item and leaves the value unchanged
QUERY_ORDER_INVARIANT = {"oxford_map", "revisited_map", "holidays_map", "ukbench_score"}

# renumbering the database images consistently (in ranks and gnd) changes nothing
DATABASE_RELABEL_INVARIANT = {"oxford_map", "revisited_map", "holidays_map", "ukbench_score"}

INVARIANCE_TABLES = {
    "CLASS_PERMUTATION_INVARIANT": CLASS_PERMUTATION_INVARIANT,
    "MONOTONE_SCORE_INVARIANT": MONOTONE_SCORE_INVARIANT,
    "SAMPLE_ORDER_INVARIANT": SAMPLE_ORDER_INVARIANT,
    "QUERY_ORDER_INVARIANT": QUERY_ORDER_INVARIANT,
    "DATABASE_RELABEL_INVARIANT": DATABASE_RELABEL_INVARIANT,
}


def test_every_registered_metric_is_classified() -> None:
    registered = set(METRICS.list())
    assert registered == set(PERFECT), "add the metric to PERFECT (and BOUNDED) in this file"
    in_some_table = set().union(*INVARIANCE_TABLES.values())
    assert registered <= in_some_table, (
        f"classify {sorted(registered - in_some_table)} in an invariance table"
    )
    for table_name, table in INVARIANCE_TABLES.items():
        assert table <= registered, f"{table_name} lists unregistered metrics {sorted(table - registered)}"
    for name in registered:
        kind = METRICS.get(name).kind
        if kind == "retrieval":
            assert name in QUERY_ORDER_INVARIANT, name  # every retrieval metric must be a mean over queries
        else:
            assert name in CLASS_PERMUTATION_INVARIANT, name
        if kind == "multilabel":
            assert name in MONOTONE_SCORE_INVARIANT, name


# ------------------------------------------------------------------------------------------------ inputs

N_CLASSES = 5


def _classification(rng: np.random.Generator, n: int = 120) -> dict[str, Any]:
    y_true = rng.integers(0, N_CLASSES, size=n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, N_CLASSES, size=n))
    return {"y_true": y_true, "y_pred": y_pred, "n_classes": N_CLASSES}


def _multilabel(rng: np.random.Generator, n: int = 80, ties: bool = False) -> dict[str, Any]:
    labels = rng.choice([1, -1, 0], size=(n, N_CLASSES), p=[0.3, 0.6, 0.1])
    labels[0], labels[1] = 1, -1  # every class has a positive and a negative
    scores = rng.normal(size=(n, N_CLASSES)) + labels
    return {"scores": np.round(scores, 0) if ties else scores, "labels": labels}


def _retrieval(
    rng: np.random.Generator, n_db: int = 60, n_q: int = 8, perfect: bool = False
) -> dict[str, Any]:
    """One gnd that every retrieval metric can read.

    Per query: disjoint easy / hard / junk sets and the query's own image ``self`` (which is also junk, as
    an Oxford query in its database would be); positives = easy ∪ hard, at least 3 of them (UKBench).
    The perfect ranking is self, easy, hard, junk, then the rest.
    """
    ranks, gnd = [], []
    for _ in range(n_q):
        perm = rng.permutation(n_db)
        me = perm[0]
        ne, nh, nj = int(rng.integers(1, 5)), int(rng.integers(2, 5)), int(rng.integers(0, 4))
        easy, hard, junk = perm[1 : 1 + ne], perm[1 + ne : 1 + ne + nh], perm[1 + ne + nh : 1 + ne + nh + nj]
        gnd.append(
            {
                "self": me,
                "easy": easy,
                "hard": hard,
                "junk": np.append(junk, me),
                "positives": np.concatenate((easy, hard)),
            }
        )
        ranks.append(perm if perfect else rng.permutation(n_db))
    return {"ranks": np.stack(ranks), "gnd": gnd}


def _inputs(name: str, rng: np.random.Generator, **kw: Any) -> dict[str, Any]:
    kind = METRICS.get(name).kind
    return {"classification": _classification, "multilabel": _multilabel, "retrieval": _retrieval}[kind](
        rng, **kw
    )


def _perfect(name: str, rng: np.random.Generator) -> dict[str, Any]:
    kind = METRICS.get(name).kind
    if kind == "classification":
        inputs = _classification(rng)
        return {**inputs, "y_pred": inputs["y_true"].copy()}
    if kind == "multilabel":
        inputs = _multilabel(rng)
        return {**inputs, "scores": inputs["labels"].astype(float)}  # positives 1 > negatives -1; 0 ignored
    return _retrieval(rng, perfect=True)


def _same(a: MetricResult, b: MetricResult, per_item_order: np.ndarray | None = None) -> None:
    """Same value and extras; per_item equal after reordering ``b``'s by ``per_item_order``."""
    assert a.value == pytest.approx(b.value, rel=1e-12, abs=1e-12, nan_ok=True)
    assert a.extra.keys() == b.extra.keys()
    for key in a.extra:
        assert a.extra[key] == pytest.approx(b.extra[key], rel=1e-12, abs=1e-12, nan_ok=True), key
    if a.per_item is not None:
        pb = b.per_item if per_item_order is None else b.per_item[per_item_order]
        np.testing.assert_allclose(a.per_item, pb, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ properties


@pytest.mark.parametrize("name", sorted(PERFECT))
@pytest.mark.parametrize("seed", SEEDS)
def test_perfect_prediction_scores_the_maximum(name: str, seed: int) -> None:
    r = compute(name, **_perfect(name, np.random.default_rng(seed)))
    assert r.value == pytest.approx(PERFECT[name], abs=1e-12)
    finite = r.per_item[~np.isnan(r.per_item)]
    assert finite.size and np.allclose(finite, PERFECT[name])
    for key, value in r.extra.items():  # the other numbers of a perfect result are perfect too
        assert value == pytest.approx(1.0, abs=1e-12), key


@pytest.mark.parametrize("name", sorted(BOUNDED))
@pytest.mark.parametrize("seed", SEEDS)
def test_values_are_bounded(name: str, seed: int) -> None:
    r = compute(name, **_inputs(name, np.random.default_rng(seed)))
    assert 0.0 <= r.value <= BOUNDED[name]
    finite = r.per_item[~np.isnan(r.per_item)]
    assert ((finite >= 0) & (finite <= BOUNDED[name])).all()


@pytest.mark.parametrize("name", sorted(CLASS_PERMUTATION_INVARIANT))
@pytest.mark.parametrize("seed", SEEDS)
def test_class_permutation_invariance(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    inputs = _inputs(name, rng)
    perm = rng.permutation(N_CLASSES)  # new class index of old class c is perm[c]
    if METRICS.get(name).kind == "classification":
        moved = {**inputs, "y_true": perm[inputs["y_true"]], "y_pred": perm[inputs["y_pred"]]}
    else:
        inverse = np.argsort(perm)  # new column j holds old column inverse[j]
        moved = {"scores": inputs["scores"][:, inverse], "labels": inputs["labels"][:, inverse]}
    # new per_item[perm[c]] = old per_item[c]
    _same(compute(name, **inputs), compute(name, **moved), per_item_order=perm)


@pytest.mark.parametrize("name", sorted(MONOTONE_SCORE_INVARIANT))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "transform",
    [lambda s: 3.0 * s - 7.0, np.exp, np.arctan, lambda s: s**3],
    ids=["affine", "exp", "arctan", "cube"],
)
def test_monotone_score_transform_invariance(
    name: str, seed: int, transform: Callable[[np.ndarray], np.ndarray]
) -> None:
    inputs = _inputs(name, np.random.default_rng(seed), ties=True)  # ties must stay ties
    moved = {**inputs, "scores": transform(inputs["scores"])}
    _same(compute(name, **inputs), compute(name, **moved))


@pytest.mark.parametrize("name", sorted(SAMPLE_ORDER_INVARIANT))
@pytest.mark.parametrize("seed", SEEDS)
def test_sample_order_invariance(name: str, seed: int) -> None:
    # continuous random scores: no ties (with ties, VOC AP depends on the input order, like the devkit)
    rng = np.random.default_rng(seed)
    inputs = _inputs(name, rng)
    n = len(next(iter(v for k, v in inputs.items() if k != "n_classes")))
    order = rng.permutation(n)
    moved = {k: (v if k == "n_classes" else np.asarray(v)[order]) for k, v in inputs.items()}
    _same(compute(name, **inputs), compute(name, **moved))


@pytest.mark.parametrize("name", sorted(QUERY_ORDER_INVARIANT))
@pytest.mark.parametrize("seed", SEEDS)
def test_query_order_invariance(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    inputs = _inputs(name, rng)
    order = rng.permutation(len(inputs["gnd"]))
    moved = {"ranks": inputs["ranks"][order], "gnd": [inputs["gnd"][i] for i in order]}
    _same(compute(name, **moved), compute(name, **inputs), per_item_order=order)


@pytest.mark.parametrize("name", sorted(DATABASE_RELABEL_INVARIANT))
@pytest.mark.parametrize("seed", SEEDS)
def test_database_relabel_invariance(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    inputs = _inputs(name, rng)
    new_id = rng.permutation(inputs["ranks"].max() + 1)  # database image i becomes new_id[i]
    moved = {
        "ranks": new_id[inputs["ranks"]],
        "gnd": [{k: new_id[np.asarray(v)] for k, v in g.items()} for g in inputs["gnd"]],
    }
    _same(compute(name, **inputs), compute(name, **moved))


def test_ukbench_without_gnd_is_not_relabel_invariant() -> None:
    # documented exception: without gnd the groups are index // 4, so the numbering is the ground truth
    ranks = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 0, 1, 3], [3, 0, 1, 2]])
    assert compute("ukbench_score", ranks=ranks).value == 4.0
    new_id = np.array([0, 4, 5, 6, 1, 2, 3, 7])
    assert compute("ukbench_score", ranks=new_id[ranks]).value < 4.0
