"""cnnbase.metrics against hand-worked tiny cases and against the naive ports in tests/_reference.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cnnbase.errors import ConfigError
from cnnbase.metrics import (
    METRICS,
    MetricResult,
    accuracy,
    compute,
    confusion_matrix,
    holidays_aps,
    holidays_map,
    mean_auc,
    mean_class_accuracy,
    oxford_ap,
    oxford_aps,
    oxford_map,
    per_class_accuracy,
    register_metric,
    revisited_map,
    roc_auc,
    ukbench_counts,
    ukbench_score,
    voc07_ap,
    voc_area_ap,
)
from cnnbase.metrics.voc import _VOC07_THRESHOLDS

try:  # tests/ as a package or as a rootdir-inserted folder
    from tests import _reference as ref
except ImportError:  # pragma: no cover
    import _reference as ref

SEEDS = [0, 1, 2, 3, 4]
EXACT = {"rel": 0, "abs": 1e-12}


# ============================================================================================ VOC, hand-worked


def test_voc07_hand_case() -> None:
    # ranked: +(0.9) -(0.8) +(0.7); rec = [.5, .5, 1], prec = [1, .5, 2/3]
    # t = 0, .1, ..., .5 (6 thresholds): max prec with rec >= t = 1
    # t = .6, ..., 1 (5 thresholds): only the last point (rec 1): 2/3
    # AP = (6 * 1 + 5 * 2/3) / 11 = 28/33
    assert voc07_ap([0.9, 0.8, 0.7], [1, -1, 1]) == pytest.approx(28 / 33, **EXACT)


def test_voc_area_hand_case() -> None:
    # same ranking: envelope = [1, 2/3 (for the point at rec .5 after the negative), 2/3]
    # recall changes 0 -> .5 (precision envelope 1) and .5 -> 1 (envelope 2/3): .5 * 1 + .5 * 2/3 = 5/6
    assert voc_area_ap([0.9, 0.8, 0.7], [1, -1, 1]) == pytest.approx(5 / 6, **EXACT)


def test_voc_envelope_lifts_earlier_precision() -> None:
    # ranked: - + - + ; rec = [0, .5, .5, 1], prec = [0, .5, 1/3, .5]; envelope = [.5, .5, .5, .5]
    # VOC07: every threshold finds envelope .5 -> AP = .5 ; area: .5 * .5 + .5 * .5 = .5
    s, y = [4, 3, 2, 1], [-1, 1, -1, 1]
    assert voc07_ap(s, y) == pytest.approx(0.5, **EXACT)
    assert voc_area_ap(s, y) == pytest.approx(0.5, **EXACT)


def test_voc_difficult_is_ignored() -> None:
    # the hand case with difficult images (label 0) interleaved, even at the top: same numbers
    s = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.1]
    y = [0, 1, 0, -1, 0, 1, 0]
    assert voc07_ap(s, y) == pytest.approx(28 / 33, **EXACT)
    assert voc_area_ap(s, y) == pytest.approx(5 / 6, **EXACT)
    # and the devkit, which ranks the difficult images but counts them as neither tp nor fp, agrees
    assert ref.voc07_ap(s, y) == pytest.approx(28 / 33, **EXACT)
    assert ref.voc_area_ap(s, y) == pytest.approx(5 / 6, **EXACT)


def test_voc_ties_keep_input_order() -> None:
    # two tied images: the stable sort keeps input order (MATLAB's sort(-out) is stable too)
    # negative first: rec = [0, 1], prec = [0, .5] -> every threshold: .5 ; area: 1 * .5
    assert voc07_ap([0.5, 0.5], [-1, 1]) == pytest.approx(0.5, **EXACT)
    assert voc_area_ap([0.5, 0.5], [-1, 1]) == pytest.approx(0.5, **EXACT)
    # positive first: rec = [1, 1], prec = [1, .5] -> 1 for both
    assert voc07_ap([0.5, 0.5], [1, -1]) == pytest.approx(1.0, **EXACT)
    assert voc_area_ap([0.5, 0.5], [1, -1]) == pytest.approx(1.0, **EXACT)
    # the devkit port gives the same, both ways
    assert ref.voc07_ap([0.5, 0.5], [-1, 1]) == pytest.approx(0.5, **EXACT)
    assert ref.voc07_ap([0.5, 0.5], [1, -1]) == pytest.approx(1.0, **EXACT)


def test_voc_no_positive_is_nan() -> None:
    assert np.isnan(voc07_ap([0.3, 0.2], [-1, -1]))
    assert np.isnan(voc_area_ap([0.3, 0.2], [-1, -1]))
    assert np.isnan(voc07_ap([0.3, 0.2], [0, 0]))  # all difficult
    assert np.isnan(voc07_ap([], []))
    # deliberate deviation: the 2007 devkit returns 0 here (rec = 0/0 = NaN, no rec >= t, p = 0);
    # the 2010 VOCap.m returns NaN (NaN recalls make the sum NaN), which we follow for both
    assert ref.voc07_ap([0.3, 0.2], [-1, -1]) == 0.0
    assert np.isnan(ref.voc_area_ap([0.3, 0.2], [-1, -1]))


def test_voc07_thresholds_are_matlab_colon() -> None:
    # MATLAB's 0:0.1:1 bit for bit; np.arange differs at 0.6 and 0.7 (py-faster-rcnn's grid)
    assert _VOC07_THRESHOLDS.tolist() == ref.matlab_colon(0, 0.1, 1)
    assert _VOC07_THRESHOLDS[3] == 0.30000000000000004 and 0.3 < _VOC07_THRESHOLDS[3]
    grid = np.arange(0.0, 1.1, 0.1)
    assert np.flatnonzero(grid != _VOC07_THRESHOLDS).tolist() == [6, 7]


def test_voc07_recall_exactly_three_tenths_misses_t_03() -> None:
    # 10 positives: 3 first (rec 0.3 = 0.2999..., prec 1), then 10 negatives, then the other 7 positives.
    # Final precisions 4/14 .. 10/20, so the envelope after rec 0.3 is 0.5.
    # devkit: t = 0, .1, .2 -> 1; t = 0.30000000000000004 is above rec = 0.3, so t = .3 .. 1 (8 thresholds)
    # all get 0.5: AP = (3 + 8 * .5) / 11 = 7/11. With an exact t = 0.3 it would be (4 + 7 * .5) / 11.
    y = [1] * 3 + [-1] * 10 + [1] * 7
    s = list(range(20, 0, -1))
    assert voc07_ap(s, y) == pytest.approx(7 / 11, **EXACT)
    assert ref.voc07_ap(s, y) == pytest.approx(7 / 11, **EXACT)
    assert voc07_ap(s, y) != pytest.approx(7.5 / 11)


def test_sklearn_average_precision_is_not_voc_ap() -> None:
    # why cnnbase never uses sklearn's AP for VOC (PROTOCOLS.md 6.6)
    from sklearn.metrics import average_precision_score

    # not interpolated: sum (R_n - R_{n-1}) P_n = .5 * 1 + .5 * 2/3 = 5/6, while VOC07 gives 28/33
    assert average_precision_score([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(5 / 6)
    assert voc07_ap([0.9, 0.8, 0.7], [1, -1, 1]) == pytest.approx(28 / 33)
    # ties: sklearn makes one threshold of a tie (precision 1/2 at recall 1): 0.5; VOC ranks the tie
    # in input order, positive first: 1.0
    assert average_precision_score([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert voc_area_ap([0.5, 0.5], [1, -1]) == 1.0
    # on random data it differs from both VOC variants
    rng = np.random.default_rng(0)
    y = np.where(rng.random(60) < 0.3, 1, -1)
    s = rng.normal(size=60) + (y > 0)
    sk = average_precision_score(y > 0, s)
    assert abs(sk - voc07_ap(s, y)) > 1e-3 and abs(sk - voc_area_ap(s, y)) > 1e-6


# ============================================================================================ VOC, randomised


def _voc_case(rng: np.random.Generator, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    y = rng.choice([1, -1, 0], size=n, p=[0.3, 0.6, 0.1])
    s = rng.normal(size=n) + 0.8 * (y > 0)
    if ties:
        s = np.round(s, 0)
    return s, y


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 5, 37, 200])
@pytest.mark.parametrize("ties", [False, True])
def test_voc_matches_devkit_port(seed: int, n: int, ties: bool) -> None:
    rng = np.random.default_rng(seed * 1000 + n)
    for _ in range(3):
        s, y = _voc_case(rng, n, ties)
        if not (y > 0).any():
            assert np.isnan(voc07_ap(s, y)) and np.isnan(voc_area_ap(s, y))
            continue
        assert voc07_ap(s, y) == pytest.approx(ref.voc07_ap(s.tolist(), y.tolist()), **EXACT)
        assert voc_area_ap(s, y) == pytest.approx(ref.voc_area_ap(s.tolist(), y.tolist()), **EXACT)


def test_voc_matches_sklearn_free_area_formula_without_ties() -> None:
    # without ties and difficult images, area AP = sum over positives of the envelope precision / npos
    rng = np.random.default_rng(5)
    s = rng.normal(size=50)
    y = np.where(rng.random(50) < 0.4, 1, -1)
    order = np.argsort(-s)
    hit = y[order] > 0
    prec = np.cumsum(hit) / np.arange(1, 51)
    env = np.maximum.accumulate(prec[::-1])[::-1]
    assert voc_area_ap(s, y) == pytest.approx(env[hit].sum() / hit.sum(), **EXACT)


def test_voc_input_errors() -> None:
    with pytest.raises(ValueError, match="1 \\(positive\\), -1 \\(negative\\) or 0"):
        voc07_ap([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        voc07_ap([0.1, np.nan], [1, -1])
    with pytest.raises(ValueError, match="not booleans"):
        voc07_ap([0.1, 0.2], np.array([True, False]))
    with pytest.raises(ValueError, match="same length"):
        voc_area_ap([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="one class"):
        voc07_ap([[0.1]], [[1]])


# ============================================================================================ accuracy


def test_accuracy_and_mean_class_accuracy_hand_case() -> None:
    # class 0: 3 samples, 2 right (2/3); class 1: 1 sample, right (1)
    # accuracy = 3/4; mean class accuracy = (2/3 + 1) / 2 = 5/6
    t, p = [0, 0, 0, 1], [0, 0, 1, 1]
    assert accuracy(t, p) == 0.75
    assert mean_class_accuracy(t, p) == pytest.approx(5 / 6, **EXACT)
    assert confusion_matrix(t, p).tolist() == [[2, 1], [0, 1]]


def test_mean_class_accuracy_excludes_absent_classes() -> None:
    # n_classes = 3 but class 2 never occurs in y_true: its row is empty, per-class NaN, left out of the mean
    t, p = [0, 0, 0, 1], [0, 0, 1, 1]
    pc = per_class_accuracy(t, p, n_classes=3)
    assert pc[:2] == pytest.approx([2 / 3, 1.0]) and np.isnan(pc[2])
    assert mean_class_accuracy(t, p, n_classes=3) == pytest.approx(5 / 6, **EXACT)
    # predicting an absent class is still an error for the true class: class 0 -> 0/1, class 1 -> 1/1
    assert mean_class_accuracy([0, 1], [2, 1], n_classes=3) == 0.5


def test_accuracy_matches_sklearn() -> None:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        t = rng.integers(0, 7, size=300)
        p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 7, size=300))
        t[0:7] = np.arange(7)  # every class present, so balanced accuracy is the same definition
        assert accuracy(t, p) == pytest.approx(accuracy_score(t, p), **EXACT)
        assert mean_class_accuracy(t, p) == pytest.approx(balanced_accuracy_score(t, p), **EXACT)
        assert (confusion_matrix(t, p, 7) == sk_confusion_matrix(t, p, labels=range(7))).all()


def test_accuracy_input_errors() -> None:
    with pytest.raises(ValueError, match="out of range"):
        mean_class_accuracy([0, 3], [0, 1], n_classes=3)
    with pytest.raises(ValueError, match="integer class indices"):
        accuracy([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="negative"):
        accuracy([0, -1], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0])
    assert np.isnan(accuracy([], []))


# ============================================================================================ AUC


def test_roc_auc_hand_case_with_tie() -> None:
    # positives .9, .8 ; negatives .8, .1: pairs (.9,.8)=1 (.9,.1)=1 (.8,.8)=1/2 (.8,.1)=1 -> 3.5/4
    assert roc_auc([0.9, 0.8, 0.8, 0.1], [1, 1, -1, -1]) == 0.875
    # label 0 is ignored wherever it scores
    assert roc_auc([0.9, 0.8, 0.8, 0.1, 5.0, -5.0], [1, 1, -1, -1, 0, 0]) == 0.875


def test_mean_auc_skips_undefined_columns() -> None:
    # column 0: AUC 1; column 1: no negative -> NaN, skipped; mean = 1
    scores = [[0.9, 0.1], [0.2, 0.8], [0.1, 0.5]]
    labels = [[1, 1], [-1, 1], [-1, 0]]
    assert np.isnan(roc_auc([0.1, 0.8, 0.5], [1, 1, 0]))
    assert mean_auc(scores, labels) == 1.0
    assert np.isnan(mean_auc([[0.1], [0.2]], [[1], [1]]))


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_matches_pairwise_and_sklearn(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    for n in (2, 9, 120):
        y = rng.choice([1, -1, 0], size=n, p=[0.4, 0.5, 0.1])
        s = np.round(rng.normal(size=n) + (y > 0), 1)  # with ties
        if not ((y > 0).any() and (y < 0).any()):
            assert np.isnan(roc_auc(s, y))
            continue
        assert roc_auc(s, y) == pytest.approx(ref.roc_auc(s.tolist(), y.tolist()), **EXACT)
        keep = y != 0
        assert roc_auc(s, y) == pytest.approx(roc_auc_score(y[keep] > 0, s[keep]), **EXACT)


# ============================================================================================ Oxford


def test_oxford_ap_hand_case_with_junk() -> None:
    # ranking 0 1 2 3 4, positives {1, 3}, junk {2}: without junk the list is 0 1 3 4,
    # positives at ranks 1 and 2. Trapezoids of width 1/2:
    #   rank 1: precision 0/1 -> 1/2: (0 + .5)/2 * .5 = 1/8
    #   rank 2: precision 1/2 -> 2/3: (.5 + 2/3)/2 * .5 = 7/24
    # AP = 3/24 + 7/24 = 5/12
    assert oxford_ap([0, 1, 2, 3, 4], [1, 3], [2]) == pytest.approx(5 / 12, **EXACT)
    assert ref.oxford_compute_ap({1, 3}, {2}, [0, 1, 2, 3, 4]) == pytest.approx(5 / 12, **EXACT)
    # without junk, 2 is a negative: positives at ranks 1 and 3:
    #   (0 + 1/2)/2 * .5 = 1/8 ; (1/3 + 2/4)/2 * .5 = 5/24 -> 1/3
    assert oxford_ap([0, 1, 2, 3, 4], [1, 3]) == pytest.approx(1 / 3, **EXACT)


def test_oxford_ap_first_is_positive() -> None:
    # the trapezoid starts at (recall 0, precision 1): one positive first = a full square
    assert oxford_ap([7, 1, 2], [7]) == 1.0
    # the same positive at rank 1: (1 + ... no: precision before = 0/1, after = 1/2 -> (0 + .5)/2 = .25
    assert oxford_ap([1, 7, 2], [7]) == 0.25


def test_oxford_ap_no_positives_all_junk_truncated() -> None:
    assert np.isnan(oxford_ap([0, 1, 2], []))  # no positives -> NaN
    # ranking made only of junk: nothing is counted, the positive is never reached -> 0
    assert oxford_ap([0, 1, 2], [9], junk=[0, 1, 2]) == 0.0
    # top-k prefix: positives {5, 8}, only 5 retrieved, at rank 0: (1 + 1)/2 * 1/2 = 1/2; 8 adds nothing
    assert oxford_ap([5, 2], [5, 8]) == 0.5
    # a positive that is also junk is skipped but stays in the recall denominator (as in the C++)
    assert oxford_ap([5, 8], [5, 8], junk=[8]) == 0.5
    assert ref.oxford_compute_ap({5, 8}, {8}, [5, 8]) == 0.5


def test_oxford_map_skips_queries_without_positives() -> None:
    ranks = [[0, 1, 2], [1, 0, 2], [2, 1, 0]]
    gnd = [{"positives": [0]}, {"positives": [0], "junk": [1]}, {"positives": [], "junk": []}]
    assert oxford_aps(ranks, gnd)[:2].tolist() == [1.0, 1.0]
    assert np.isnan(oxford_aps(ranks, gnd)[2])
    assert oxford_map(ranks, gnd) == 1.0


def _retrieval_case(
    rng: np.random.Generator, n_db: int, n_q: int
) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Random full rankings and disjoint easy/hard/junk sets; 'positives' = easy ∪ hard; 'self' ∉ those."""
    ranks = np.stack([rng.permutation(n_db) for _ in range(n_q)])
    gnd = []
    for q in range(n_q):
        perm = rng.permutation(n_db)
        ne, nh, nj = (int(v) for v in rng.integers(0, max(2, n_db // 4), size=3))
        if q == 0:
            ne, nh = max(ne, 1), max(nh, 1)  # every protocol has at least one query with positives
        easy, hard, junk = perm[:ne], perm[ne : ne + nh], perm[ne + nh : ne + nh + nj]
        gnd.append(
            {
                "easy": easy,
                "hard": hard,
                "junk": junk,
                "positives": np.concatenate((easy, hard)),
                "self": perm[-1],
            }
        )
    return ranks, gnd


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_db,k", [(6, 6), (40, 40), (300, 300), (300, 25)])
def test_oxford_ap_matches_compute_ap_cpp(seed: int, n_db: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    ranks, gnd = _retrieval_case(rng, n_db, 8)
    for q, g in enumerate(gnd):
        pos, junk = g["positives"], g["junk"]
        expected = (
            ref.oxford_compute_ap(set(pos.tolist()), set(junk.tolist()), ranks[q, :k].tolist())
            if pos.size
            else float("nan")
        )
        assert oxford_ap(ranks[q, :k], pos, junk) == pytest.approx(expected, nan_ok=True, **EXACT)


# ============================================================================================ revisited


def _hand_revisited() -> tuple[list[list[int]], list[dict[str, list[int]]]]:
    ranks = [[4, 2, 1, 0, 3, 5], [5, 0, 1, 2, 3, 4]]
    gnd = [{"easy": [0], "hard": [2], "junk": [4]}, {"easy": [5], "hard": [], "junk": []}]
    return ranks, gnd


def test_revisited_map_hand_case() -> None:
    # query 0, ranking 4 2 1 0 3 5, easy {0}, hard {2}, junk {4}
    #   Easy (ok {0}, junk {4, 2}): list 1 0 3 5 -> 0 at rank 1: AP = (0/1 + 1/2)/2 = 1/4
    #       pos (1-based) = [2]: P@1: kq = min(2, 1) = 1 -> 0/1 = 0; P@5: kq = min(2, 5) = 2 -> 1/2
    #   Medium (ok {0, 2}, junk {4}): list 2 1 0 3 5 -> ranks 0, 2:
    #       (1 + 1)/2 * 1/2 = 1/2 ; (1/2 + 2/3)/2 * 1/2 = 7/24 -> AP = 19/24
    #       pos = [1, 3]: P@1 = 1; P@5: kq = min(3, 5) = 3 -> 2/3 (revisitop caps k at the last positive)
    #   Hard (ok {2}, junk {4, 0}): list 2 1 3 5 -> rank 0: AP = 1; P@1 = P@5 = 1
    # query 1, ranking 5 0 1 2 3 4, easy {5}, no hard: Easy = Medium = 1 (P@k = 1); Hard: skipped
    # means: easy (1/4 + 1)/2 = 5/8 ; medium (19/24 + 1)/2 = 43/48 ; hard 1 (query 0 only)
    ranks, gnd = _hand_revisited()
    r = revisited_map(ranks, gnd, kappas=(1, 5))
    assert r.value == pytest.approx(43 / 48, **EXACT)
    assert r.per_item.tolist() == pytest.approx([19 / 24, 1.0], **EXACT)
    expected = {
        "easy_map": 5 / 8,
        "medium_map": 43 / 48,
        "hard_map": 1.0,
        "easy_mp@1": 0.5,  # (0 + 1) / 2
        "easy_mp@5": 0.75,  # (1/2 + 1) / 2
        "medium_mp@1": 1.0,
        "medium_mp@5": 5 / 6,  # (2/3 + 1) / 2
        "hard_mp@1": 1.0,
        "hard_mp@5": 1.0,
    }
    assert r.extra.keys() == expected.keys()
    for key, value in expected.items():
        assert r.extra[key] == pytest.approx(value, **EXACT), key


def test_revisited_map_default_kappas_and_transposed_convention() -> None:
    ranks, gnd = _hand_revisited()
    r = revisited_map(ranks, gnd)
    assert {k for k in r.extra if "mp@" in k} == {
        f"{p}_mp@{k}" for p in ("easy", "medium", "hard") for k in (1, 5, 10)
    }
    # revisitop's own layout is (db_size, n_queries); ours is its transpose
    g = [{k: np.asarray(v, dtype=np.int64) for k, v in d.items()} for d in gnd]
    m, _, _, _ = ref.revisitop_compute_map(
        np.asarray(ranks).T, ref.revisitop_protocol_gnd(g, "medium"), [1, 5, 10]
    )
    assert r.value == pytest.approx(m, **EXACT)


def test_revisited_map_truncated_and_empty() -> None:
    # top-2 shortlist; query 0's only positive (easy 3) is not retrieved: AP 0 and P@k 0 (revisitop would fail)
    r = revisited_map(
        [[0, 1], [2, 0]], [{"easy": [3], "hard": [], "junk": []}, {"easy": [2], "hard": [], "junk": []}]
    )
    assert r.per_item.tolist() == [0.0, 1.0]
    assert r.extra["easy_mp@1"] == 0.5
    assert np.isnan(r.extra["hard_map"]) and np.isnan(r.extra["hard_mp@5"])  # no query has hard images
    with pytest.raises(ValueError, match="pass ranks.T"):
        revisited_map(np.arange(4), [{"easy": [1], "hard": [], "junk": []}])
    with pytest.raises(ValueError, match="kappas"):
        revisited_map([[0, 1]], [{"easy": [1], "hard": [], "junk": []}], kappas=(0,))


def test_ground_truth_of_another_layout_is_refused_not_scored_as_empty() -> None:
    """revisitop's per-protocol gnd ({ok, junk}) or an Oxford gnd given to revisited_map, and the reverse, once gave
    NaN or a wrong mAP silently (a missing list read as empty)."""
    from cnnbase.metrics import holidays_map, oxford_map, ukbench_score

    r = [[0, 1, 2, 3]]
    for gnd, missing in (([{"ok": [0, 2], "junk": [1]}], "'easy', 'hard'"), ([{"easy": [0, 2]}], "'hard', 'junk'"),
                         ([{"positives": [0], "junk": []}], "'easy', 'hard'")):
        with pytest.raises(ValueError, match=f"gnd\\[0\\] has no {missing} .*another benchmark"):
            revisited_map(r, gnd)
    for fn in (oxford_map, holidays_map, ukbench_score):
        with pytest.raises(ValueError, match="has no 'positives' \\(its keys: 'easy', 'hard', 'junk'\\)"):
            fn(r, [{"easy": [0], "hard": [1], "junk": []}])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_db,n_q", [(8, 3), (60, 10), (400, 12)])
def test_revisited_map_matches_revisitop(seed: int, n_db: int, n_q: int) -> None:
    rng = np.random.default_rng(seed + 17 * n_db)
    ranks, gnd = _retrieval_case(rng, n_db, n_q)
    r = revisited_map(ranks, gnd, kappas=(1, 5, 10))
    for protocol in ("easy", "medium", "hard"):
        m, aps, pr, _ = ref.revisitop_compute_map(
            ranks.T, ref.revisitop_protocol_gnd(gnd, protocol), [1, 5, 10]
        )
        assert r.extra[f"{protocol}_map"] == pytest.approx(m, **EXACT)
        for j, k in enumerate((1, 5, 10)):
            assert r.extra[f"{protocol}_mp@{k}"] == pytest.approx(pr[j], **EXACT)
        if protocol == "medium":
            np.testing.assert_allclose(r.per_item, aps, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_revisited_ap_on_shortlists_matches_revisitop(seed: int) -> None:
    # revisitop's compute_map also accepts a (k, n_queries) shortlist; its AP (no kappas) must agree
    rng = np.random.default_rng(seed)
    ranks, gnd = _retrieval_case(rng, 200, 10)
    short = ranks[:, :30]
    r = revisited_map(short, gnd)
    _, aps, _, _ = ref.revisitop_compute_map(short.T, ref.revisitop_protocol_gnd(gnd, "medium"))
    np.testing.assert_allclose(r.per_item, aps, rtol=0, atol=1e-12)


# ============================================================================================ Holidays


def test_holidays_query_itself_is_ignored() -> None:
    # query = db image 0, positives {1, 2}; ranking 3 0 1 4 2 -> without the query: 3 1 4 2,
    # positives at ranks 1 and 3: (0 + 1/2)/2 * 1/2 = 1/8 ; (1/3 + 2/4)/2 * 1/2 = 5/24 -> AP = 1/3
    ranks, gnd = [[3, 0, 1, 4, 2]], [{"self": 0, "positives": [1, 2]}]
    assert holidays_aps(ranks, gnd).tolist() == pytest.approx([1 / 3], **EXACT)
    assert ref.holidays_map(np.asarray(ranks), gnd) == pytest.approx(1 / 3, **EXACT)
    # counting the query as a negative (plain Oxford AP) would give ranks 2 and 4:
    # (0 + 1/3)/2 * 1/2 = 1/12 ; (1/4 + 2/5)/2 * 1/2 = 13/80
    assert oxford_ap(ranks[0], [1, 2]) == pytest.approx(1 / 12 + 13 / 80, **EXACT)
    # the query's own index listed among its positives is dropped (Holidays' gt never contains it)
    assert holidays_map(ranks, [{"self": 0, "positives": [0, 1, 2]}]) == pytest.approx(1 / 3, **EXACT)


def test_holidays_query_not_returned_and_no_positives() -> None:
    # query 9 absent from the top-3 list: plain trapezoid; positive 1 at rank 0 of 2 positives -> 1/2
    assert holidays_map([[1, 5, 6]], [{"self": 9, "positives": [1, 2]}]) == 0.5
    aps = holidays_aps([[1, 0], [0, 1]], [{"self": 0, "positives": [1]}, {"self": 1, "positives": []}])
    assert aps[0] == 1.0 and np.isnan(aps[1])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_db,k", [(5, 5), (50, 50), (300, 300), (300, 20)])
def test_holidays_map_matches_official_script(seed: int, n_db: int, k: int) -> None:
    rng = np.random.default_rng(seed + n_db + k)
    n_q = 12
    ranks = np.stack([rng.permutation(n_db)[:k] for _ in range(n_q)])
    gnd = []
    for q in range(n_q):
        perm = rng.permutation(n_db)
        me = int(ranks[q, rng.integers(0, k)]) if q % 2 else int(perm[0])  # often the query is retrieved
        others = perm[perm != me]
        gnd.append({"self": me, "positives": others[: int(rng.integers(1, max(2, n_db // 5)))]})
    assert holidays_map(ranks, gnd) == pytest.approx(ref.holidays_map(ranks, gnd), **EXACT)


# ============================================================================================ UKBench


def test_ukbench_hand_cases() -> None:
    # 8 images = groups {0..3}, {4..7}. Query 0: top-4 = 0 1 5 2 -> 0, 1, 2 in its group: 3
    # Query 1: 1 0 2 3 -> 4 (the query itself counts). Query 4: 4 0 1 2 -> 1. Query 5..7 not used.
    ranks = [[0, 1, 5, 2, 3], [1, 0, 2, 3, 7]]
    assert ukbench_counts(ranks).tolist() == [3, 4]
    assert ukbench_score(ranks) == 3.5
    # only the first 4 columns count
    assert ukbench_counts([[0, 4, 5, 6, 1, 2, 3]]).tolist() == [1]
    # the same groups through gnd (positives ∪ self)
    gnd = [{"self": 0, "positives": [1, 2, 3]}, {"self": 1, "positives": [0, 2, 3]}]
    assert ukbench_counts(ranks, gnd).tolist() == [3, 4]
    with pytest.raises(ValueError, match="at least 4"):
        ukbench_score([[0, 1, 2]])


@pytest.mark.parametrize("seed", SEEDS)
def test_ukbench_matches_pcv(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4 * 25
    ranks = np.stack([rng.permutation(n) for _ in range(n)])
    # make some queries good: their group first
    for i in range(0, n, 3):
        grp = np.arange(4 * (i // 4), 4 * (i // 4) + 4)
        ranks[i] = np.concatenate((rng.permutation(grp), np.setdiff1d(ranks[i], grp)))
    assert ukbench_score(ranks) == pytest.approx(ref.ukbench_score(ranks), **EXACT)
    gnd = [
        {"self": i, "positives": np.setdiff1d(np.arange(4 * (i // 4), 4 * (i // 4) + 4), [i])}
        for i in range(n)
    ]
    assert ukbench_score(ranks, gnd) == pytest.approx(ref.ukbench_score(ranks), **EXACT)


# ============================================================================================ retrieval inputs


def test_retrieval_input_errors() -> None:
    with pytest.raises(ValueError, match="gnd has 1"):
        oxford_map([[0, 1], [1, 0]], [{"positives": [0]}])
    with pytest.raises(ValueError, match="integer"):
        oxford_map([[0.0, 1.0]], [{"positives": [0]}])
    with pytest.raises(ValueError, match="negative"):
        holidays_map([[0, -1]], [{"self": 0, "positives": [1]}])
    with pytest.raises(ValueError, match="1-D"):
        oxford_ap([[0, 1]], [0])


# ============================================================================================ registry, wrappers


def test_compute_wrappers_carry_the_other_numbers() -> None:
    t, p = [0, 0, 0, 1], [0, 0, 1, 1]
    acc = compute("accuracy", y_true=t, y_pred=p, n_classes=3)
    mca = compute("mean_class_accuracy", y_true=t, y_pred=p, n_classes=3)
    assert acc.value == 0.75 and acc.extra == {"mean_class_accuracy": pytest.approx(5 / 6)}
    assert mca.value == pytest.approx(5 / 6) and mca.extra == {"accuracy": 0.75}
    assert acc.per_item.shape == (3,) and np.isnan(acc.per_item[2])

    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    labels = np.array([[1, -1], [-1, -1], [1, 1]])
    v07 = compute("voc07_map", scores=scores, labels=labels)
    area = compute("voc_area_map", scores=scores, labels=labels)
    # class 0: the hand case (28/33, 5/6); class 1: its only positive is ranked first -> 1 and 1
    assert v07.per_item.tolist() == pytest.approx([28 / 33, 1.0])
    assert v07.value == pytest.approx((28 / 33 + 1) / 2)
    assert v07.extra["voc_area_map"] == pytest.approx(area.value) == pytest.approx((5 / 6 + 1) / 2)
    assert area.extra["voc07_map"] == pytest.approx(v07.value)
    # a class without positives is NaN in per_item and skipped by the mean
    r = compute("voc07_map", scores=scores, labels=np.array([[1, -1], [-1, -1], [1, -1]]))
    assert np.isnan(r.per_item[1]) and r.value == pytest.approx(28 / 33)

    ranks, gnd = _hand_revisited()
    assert compute("revisited_map", ranks=ranks, gnd=gnd).value == pytest.approx(43 / 48)
    assert compute("ukbench_score", ranks=[[0, 1, 5, 2]]).value == 3.0
    assert compute(
        "holidays_map", ranks=[[3, 0, 1, 4, 2]], gnd=[{"self": 0, "positives": [1, 2]}]
    ).value == pytest.approx(1 / 3)
    assert compute(
        "oxford_map", ranks=[[0, 1, 2, 3, 4]], gnd=[{"positives": [1, 3], "junk": [2]}]
    ).value == pytest.approx(5 / 12)


def test_registry_entries() -> None:
    required = {
        "accuracy": "classification",
        "mean_class_accuracy": "classification",
        "voc07_map": "multilabel",
        "voc_area_map": "multilabel",
        "mean_auc": "multilabel",
        "oxford_map": "retrieval",
        "revisited_map": "retrieval",
        "holidays_map": "retrieval",
        "ukbench_score": "retrieval",
    }
    for name, kind in required.items():
        spec = METRICS.get(name)
        assert spec.name == name and spec.kind == kind and spec.higher_is_better and spec.doc
        assert spec.scale == (1.0 if name == "ukbench_score" else 100.0)
    with pytest.raises(ConfigError, match="did you mean voc07_map"):
        compute("voc07_mAP", scores=[], labels=[])
    with pytest.raises(ValueError, match="already registered"):
        register_metric("accuracy", "classification")(lambda y_true, y_pred, n_classes=None: None)
    with pytest.raises(ValueError, match="unknown metric kind"):
        register_metric("x", "regression")


def test_metric_result_is_frozen() -> None:
    r = MetricResult(1, [0.5, 1.5], {"a": 2})
    assert isinstance(r.value, float) and r.extra == {"a": 2.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.per_item[0] = 3.0  # read-only
    assert MetricResult(0.5).per_item is None and MetricResult(0.5).extra == {}
