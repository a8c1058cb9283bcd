"""Tests of cnnbase.heads.svm.LinearSVMHead: solvers against liblinear, CV, folds, voting, files, errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.svm import LinearSVC

from cnnbase.errors import ConfigError
from cnnbase.heads import svm
from cnnbase.heads.svm import LinearSVMHead, cv_fold_ids
from cnnbase.metrics import voc07_ap

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny problems, one thread


# ----------------------------------------------------------------------------------------------- data


def _features(
    rng: np.random.Generator, codes: np.ndarray, d: int, noise: float, proj: np.ndarray
) -> np.ndarray:
    """Non-negative, L2-normalised features from latent codes (like ReLU CNN features)."""
    h = np.maximum(codes @ proj + noise * rng.standard_normal((codes.shape[0], d)) - 0.2, 0.0)
    return (h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def make_multiclass(n: int, d: int, k: int, *, strength: float, seed: int, n_test: int = 0):
    rng = np.random.default_rng(seed)
    latent = 16
    protos = rng.standard_normal((k, latent))
    proj = rng.standard_normal((latent, d)) / np.sqrt(latent)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(m) % k
        rng.shuffle(y)
        return _features(rng, strength * protos[y] + rng.standard_normal((m, latent)), d, 0.3, proj), y

    X, y = draw(n)
    if not n_test:
        return X, y
    Xt, yt = draw(n_test)
    return X, y, Xt, yt


def make_multilabel(n: int, d: int, k: int, *, strength: float, seed: int, n_test: int = 0):
    rng = np.random.default_rng(seed)
    latent = 16
    protos = rng.standard_normal((k, latent))
    proj = rng.standard_normal((latent, d)) / np.sqrt(latent)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        Y = -np.ones((m, k), np.int8)
        Y[np.arange(m), rng.integers(0, k, m)] = 1
        extra = rng.random(m) < 0.3
        Y[np.nonzero(extra)[0], rng.integers(0, k, int(extra.sum()))] = 1
        codes = strength * (Y > 0) @ protos + rng.standard_normal((m, latent))
        Y[(Y > 0) & (rng.random((m, k)) < 0.05)] = 0  # a few "difficult" positives
        return _features(rng, codes, d, 0.3, proj), Y

    X, Y = draw(n)
    if not n_test:
        return X, Y
    Xt, Yt = draw(n_test)
    return X, Y, Xt, Yt


def objective(
    X: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: float, C: float, cw=None, s: float = 1.0
):
    """liblinear's squared-hinge objective in float64: 0.5 (|w|^2 + b'^2) + C sum cw(y) max(0, 1 - y f)^2."""
    X = X.astype(np.float64)
    w = coef.astype(np.float64)
    bprime = float(intercept) / s
    f = X @ w + float(intercept)
    h = np.maximum(0.0, 1.0 - y * f)
    weights = np.ones_like(h) if cw is None else np.where(y > 0, cw[1], cw[-1])
    return 0.5 * (w @ w + bprime * bprime) + C * float((weights * h * h).sum())


# ----------------------------------------------------------------------------------------------- basics


def test_sklearn_conventions():
    head = LinearSVMHead(mode="ovo", C=0.5)
    assert head.get_params()["C"] == 0.5
    twin = clone(head)
    assert twin.get_params() == head.get_params()
    assert not [k for k in vars(head) if k.endswith("_")]  # nothing fitted in __init__
    with pytest.raises(TypeError):
        LinearSVMHead("ovr")  # type: ignore[misc]  # keyword-only
    from sklearn.utils.estimator_checks import (
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
    )

    check_no_attributes_set_in_init("LinearSVMHead", LinearSVMHead())
    check_parameters_default_constructible("LinearSVMHead", LinearSVMHead())


@pytest.mark.parametrize("solver", ["torch", "liblinear"])
def test_separable_data_is_near_perfect(solver):
    X, y, Xt, yt = make_multiclass(150, 64, 3, strength=6.0, seed=1, n_test=150)
    ovo = LinearSVMHead(mode="ovo", C=1.0, solver=solver).fit(X, y)
    assert ovo.coef_.shape == (3, 64) and ovo.pairs_.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert (ovo.predict(Xt) == yt).mean() >= 0.99
    X, Y, Xt, Yt = make_multilabel(200, 64, 4, strength=6.0, seed=2, n_test=200)
    ovr = LinearSVMHead(C=1.0, solver=solver).fit(X, Y)
    dec = ovr.decision_function(Xt)
    assert min(voc07_ap(dec[:, j], Yt[:, j]) for j in range(4)) >= 0.99
    assert ovr.predict(Xt).shape == (200, 4) and set(np.unique(ovr.predict(Xt))) <= {-1, 1}


# ----------------------------------------------------------------------------------------------- torch vs liblinear


@pytest.mark.parametrize("n", [160, 400])  # kernel form (n <= 2 d) and w-space form (n > 2 d)
def test_torch_matches_liblinear_multilabel(n):
    X, Y, Xt, Yt = make_multilabel(n, 96, 4, strength=0.5, seed=3, n_test=400)
    kw = dict(C=0.5, class_weight={1: 2, -1: 1}, tol=1e-5)
    a = LinearSVMHead(solver="torch", **kw).fit(X, Y)
    b = LinearSVMHead(solver="liblinear", **{**kw, "tol": 1e-6, "max_iter": 20000}).fit(X, Y)
    assert a.kernel_form_ == (n <= 2 * 97)
    da, db = a.decision_function(Xt), b.decision_function(Xt)
    for j in range(4):
        assert np.corrcoef(da[:, j], db[:, j])[0, 1] > 0.9999
        assert abs(voc07_ap(da[:, j], Yt[:, j]) - voc07_ap(db[:, j], Yt[:, j])) <= 0.005
    ap_a = np.mean([voc07_ap(da[:, j], Yt[:, j]) for j in range(4)])
    assert 0.4 < ap_a < 0.95  # overlapping classes, not a trivial case


def test_torch_matches_liblinear_ovo_accuracy():
    X, y, Xt, yt = make_multiclass(240, 64, 4, strength=0.5, seed=4, n_test=400)
    a = LinearSVMHead(mode="ovo", C=1.0, solver="torch", tol=1e-5).fit(X, y)
    b = LinearSVMHead(mode="ovo", C=1.0, solver="liblinear", tol=1e-6, max_iter=20000).fit(X, y)
    acc_a, acc_b = (a.predict(Xt) == yt).mean(), (b.predict(Xt) == yt).mean()
    assert 0.4 < acc_a < 0.95
    assert abs(acc_a - acc_b) <= 0.005
    da, db = a.decision_function(Xt), b.decision_function(Xt)
    assert min(np.corrcoef(da[:, k], db[:, k])[0, 1] for k in range(6)) > 0.9999


@pytest.mark.parametrize("n, cw", [(120, None), (120, {1: 2, -1: 1}), (300, "balanced")])
def test_torch_objective_not_above_linearsvc(n, cw):
    X, Y = make_multilabel(n, 80, 3, strength=1.0, seed=5)
    C = 2.0
    head = LinearSVMHead(C=C, solver="torch", class_weight=cw, tol=1e-5).fit(X, Y)
    for j in range(3):
        y = np.where(Y[:, j] > 0, 1, -1)  # difficult = negative (the default)
        ref = LinearSVC(C=C, class_weight=cw, dual=n < 80).fit(X.astype(np.float64), y)
        weights = None
        if cw == "balanced":
            weights = {1: len(y) / (2 * (y > 0).sum()), -1: len(y) / (2 * (y < 0).sum())}
        elif cw is not None:
            weights = cw
        f_ref = objective(X, y, ref.coef_[0], ref.intercept_[0], C, weights)
        f_ours = objective(X, y, head.coef_[j], head.intercept_[j], C, weights)
        assert f_ours <= f_ref * (1 + 1e-6) + 1e-9, (j, f_ours, f_ref)
        assert head.objective_[j] == pytest.approx(f_ours, rel=1e-4)
        s_ref = X @ ref.coef_[0] + ref.intercept_[0]
        s_ours = head.decision_function(X)[:, j]
        assert np.corrcoef(s_ref, s_ours)[0, 1] > 0.9999


def test_intercept_scaling_is_liblinears():
    X, Y = make_multilabel(150, 40, 2, strength=1.0, seed=6)
    a = LinearSVMHead(C=1.0, solver="torch", intercept_scaling=10.0, tol=1e-5).fit(X, Y)
    y = np.where(Y[:, 0] > 0, 1, -1)
    ref = LinearSVC(C=1.0, intercept_scaling=10.0, tol=1e-6, max_iter=50000).fit(X.astype(np.float64), y)
    f_ref = objective(X, y, ref.coef_[0], ref.intercept_[0], 1.0, s=10.0)
    f_ours = objective(X, y, a.coef_[0], a.intercept_[0], 1.0, s=10.0)
    assert f_ours <= f_ref * (1 + 1e-6)
    assert a.intercept_[0] == pytest.approx(ref.intercept_[0], rel=1e-3, abs=1e-3)


def test_hinge_routes_to_liblinear_and_torch_refuses_it():
    X, y = make_multiclass(90, 20, 3, strength=3.0, seed=7)
    head = LinearSVMHead(mode="ovr", C=1.0, loss="hinge").fit(X, y)
    assert head.solver_ == "liblinear"
    ref = LinearSVC(C=1.0, loss="hinge", dual=True, random_state=0).fit(
        X.astype(np.float64), np.where(y == 0, 1, -1)
    )
    assert np.allclose(head.coef_[0], ref.coef_[0], atol=1e-5)
    with pytest.raises(ConfigError, match="squared hinge"):
        LinearSVMHead(loss="hinge", solver="torch").fit(X, y)


def test_difficult_ignore_drops_zero_labels_from_training():
    X, Y = make_multilabel(200, 40, 2, strength=1.5, seed=8)
    Y[:, 0] = np.where(Y[:, 0] == 0, 1, Y[:, 0])
    Yd = Y.copy()
    Yd[:20, 0] = 0  # mark 20 samples difficult
    keep = np.ones(200, bool)
    keep[:20] = False
    ign = LinearSVMHead(C=1.0, difficult="ignore", tol=1e-6).fit(X, Yd)
    ref = LinearSVMHead(C=1.0, tol=1e-6).fit(X[keep], Y[keep])
    assert np.allclose(ign.coef_[0], ref.coef_[0], atol=1e-4)
    neg = LinearSVMHead(C=1.0, difficult="negative", tol=1e-6).fit(X, Yd)
    Yn = Yd.copy()
    Yn[Yn == 0] = -1
    assert np.allclose(neg.coef_, LinearSVMHead(C=1.0, tol=1e-6).fit(X, Yn).coef_, atol=1e-5)


def test_without_a_gram_matrix_the_results_are_the_same(monkeypatch):
    """Above the Gram-matrix memory budget: ovr runs in w-space, ovo gathers each pair's Gram block from X."""
    X, y = make_multiclass(150, 96, 3, strength=1.0, seed=9)
    kw = dict(C=(0.1, 1.0), tol=1e-5)
    ovo, ovr = LinearSVMHead(mode="ovo", **kw).fit(X, y), LinearSVMHead(mode="ovr", **kw).fit(X, y)
    assert ovr.kernel_form_
    monkeypatch.setattr(svm, "_GRAM_MAX_BYTES", 0)
    ovo2, ovr2 = LinearSVMHead(mode="ovo", **kw).fit(X, y), LinearSVMHead(mode="ovr", **kw).fit(X, y)
    assert not ovr2.kernel_form_
    for a, b in ((ovo, ovo2), (ovr, ovr2)):
        assert np.array_equal(a.C_, b.C_)
        assert np.allclose(a.decision_function(X), b.decision_function(X), atol=2e-3)


@pytest.mark.parametrize("n", [1, 5, 9, 31])
def test_gram_from_the_upper_blocks_is_the_full_product(monkeypatch, n):
    monkeypatch.setattr(svm, "_GRAM_BLOCK", 4)  # several row blocks even for tiny n
    X = torch.from_numpy(np.random.default_rng(n).random((n, 7), dtype=np.float32))
    K = svm._gram(X)
    assert torch.equal(K, K.T)
    assert torch.allclose(K, X @ X.T, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("onednn", [False, True])
def test_gram_products_in_both_backends_match_a_dense_product(monkeypatch, onednn):
    if onednn and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setattr(svm, "_ONEDNN", onednn)
    rng = np.random.default_rng(3)
    G = torch.from_numpy(rng.random((3, 40, 40), dtype=np.float32))
    G = G + G.transpose(1, 2)  # Gram matrices are symmetric
    grp = torch.tensor([0, 0, 1, 1, 2, 2, 2])  # each group's columns contiguous (the solver's layout)
    V = torch.from_numpy(rng.standard_normal((40, 7), dtype=np.float32))
    op = svm._Gram(G, grp)
    assert all(m.is_mkldnn == onednn for m in op._mats.values())
    want = torch.stack([G[g] @ V[:, c] for c, g in enumerate(grp.tolist())], dim=1)
    got = op.mm(V)
    assert got.shape == V.shape and got.is_contiguous()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    keep = torch.tensor([True, False, False, True, True, False, True])
    assert torch.allclose(op.keep(keep).mm(V[:, keep]), want[:, keep], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="contiguous"):
        svm._Gram(G, torch.tensor([0, 2, 1]))
    one = svm._Gram(G[1:2], torch.zeros(3, dtype=torch.int64))
    assert torch.allclose(one.mm(V[:, :3]), G[1] @ V[:, :3], rtol=1e-5, atol=1e-5)


def test_cg_products_skip_converged_columns():
    rng = np.random.default_rng(4)
    G = torch.from_numpy(rng.random((2, 12, 12), dtype=np.float32))
    G = G + G.transpose(1, 2)
    cols = svm._Gram(G, torch.tensor([0, 0, 1, 1, 1]))
    V = torch.from_numpy(rng.standard_normal((12, 5), dtype=np.float32))
    active = torch.tensor([True, False, False, True, True])
    got = svm._mm_active(cols, V, active)
    assert torch.allclose(got[:, active], cols.mm(V)[:, active], rtol=1e-5, atol=1e-5)
    assert not got[:, ~active].any()
    # one-vs-one layout (pairs, m, C columns): a pair leaves the products when all its columns are done
    batch = svm._Gram(G)
    Vb = torch.from_numpy(rng.standard_normal((2, 12, 3), dtype=np.float32))
    act_b = torch.tensor([[False, False, False], [True, False, True]])
    got_b = svm._mm_active(batch, Vb, act_b)
    assert torch.allclose(got_b[1], G[1] @ Vb[1], rtol=1e-5, atol=1e-5)
    assert not got_b[0].any()
    assert torch.equal(svm._mm_active(batch, Vb, torch.ones(2, 3, dtype=torch.bool)), batch.mm(Vb))


def test_votes_match_a_loop_for_either_layout_of_the_decisions():
    rng = np.random.default_rng(8)
    pairs = np.array([(a, b) for a in range(4) for b in range(a + 1, 4)])
    dec = torch.from_numpy(rng.standard_normal((7, len(pairs)), dtype=np.float32))
    want_v, want_c = np.zeros((7, 4)), np.zeros((7, 4))
    for i in range(7):
        for k, (a, b) in enumerate(pairs):
            want_v[i, a if dec[i, k] > 0 else b] += 1
            want_c[i, a] += float(dec[i, k])
            want_c[i, b] -= float(dec[i, k])
    pa, pb = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    for d in (dec, dec.T.contiguous().T):  # row-major, and the transposed result held-out voting passes
        votes, confs = torch.zeros(7, 4), torch.zeros(7, 4)
        svm._vote(votes, confs, d, pa, pb)
        assert np.array_equal(votes.numpy(), want_v)
        assert np.allclose(confs.numpy(), want_c, atol=1e-5)
    with pytest.raises(ValueError, match="lexicographic"):
        svm._ClassBlocks(pairs[[0, 3, 1, 2, 4, 5]], np.zeros((4, 2), dtype=np.int64))


def test_fit_without_onednn_is_the_same(monkeypatch):
    X, Y = make_multilabel(120, 80, 3, strength=1.0, seed=31)
    kw = dict(C=(0.1, 1.0, 10.0), tol=1e-5)
    a = LinearSVMHead(**kw).fit(X, Y)
    monkeypatch.setattr(svm, "_ONEDNN", False)
    b = LinearSVMHead(**kw).fit(X, Y)
    assert np.array_equal(a.C_, b.C_)
    assert np.allclose(a.objective_, b.objective_, rtol=1e-5)
    assert np.allclose(a.decision_function(X), b.decision_function(X), atol=1e-3)


def test_small_fits_run_on_one_thread_and_restore_the_setting(monkeypatch):
    X, y = make_multiclass(60, 8, 3, strength=2.0, seed=25)
    torch.set_num_threads(2)
    seen = []
    monkeypatch.setattr(
        svm,
        "_newton_kernel",
        lambda *a, _f=svm._newton_kernel, **k: (seen.append(torch.get_num_threads()), _f(*a, **k))[1],
    )
    LinearSVMHead(mode="ovo", C=1.0).fit(X, y)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_exact_line_search_against_brute_force():
    rng = np.random.default_rng(24)
    ts = np.linspace(0, 8, 16001)
    for _ in range(40):
        n, q = int(rng.integers(1, 30)), int(rng.integers(1, 4))
        m0, dm = rng.normal(size=(n, q)), rng.normal(size=(n, q))
        cw = rng.random((n, q)) * (rng.random((n, q)) > 0.2)
        e, b = rng.random(q) + 0.01, -3 * rng.random(q)
        t = svm._line_search(*(torch.tensor(a, dtype=torch.float32) for a in (m0, dm, cw, b, e))).numpy()
        for c in range(q):
            hinge = np.maximum(0, m0[:, c, None] + ts[None] * dm[:, c, None])
            phi = ts * b[c] + 0.5 * ts**2 * e[c] + (cw[:, c, None] * hinge**2).sum(0)
            assert abs(ts[np.argmin(phi)] - t[c]) < 1e-3 or np.argmin(phi) == ts.size - 1


# ----------------------------------------------------------------------------------------------- CV


def _small_c_case():
    """Few samples, many noise dimensions: a large C interpolates the noise, the centroid rule (small C) wins."""
    rng = np.random.default_rng(10)
    n, d = 90, 400
    y = np.where(np.arange(n) % 2 == 0, 1, -1)
    X = rng.standard_normal((n, d)) * 0.5
    X[:, :5] += 0.35 * y[:, None]
    return X.astype(np.float32), np.stack([y, -y], axis=1).astype(np.int8)


def _large_c_case():
    """Dimension 0 separates the classes, dimension 1 has a larger mean gap drowned in noise: the centroid rule
    (small C) leans on dimension 1, a large C finds dimension 0."""
    rng = np.random.default_rng(11)
    n = 300
    y = np.where(np.arange(n) % 2 == 0, 1, -1)
    X = np.zeros((n, 4))
    X[:, 0] = 0.05 * y + 0.02 * rng.standard_normal(n)
    X[:, 1] = 0.5 * y + 3.0 * rng.standard_normal(n)
    X[:, 2:] = rng.standard_normal((n, 2))
    return X.astype(np.float32), np.stack([y, -y], axis=1).astype(np.int8)


@pytest.mark.parametrize("case, expect", [(_small_c_case, "small"), (_large_c_case, "large")])
@pytest.mark.parametrize("solver", ["torch", "liblinear"])
def test_cv_picks_the_best_c(case, expect, solver):
    X, Y = case()
    grid = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
    head = LinearSVMHead(C=grid, solver=solver, seed=0, tol=1e-4).fit(X, Y)
    assert head.cv_scores_.shape == (2, 6) and head.cv_fold_scores_.shape == (2, 6, 3)
    assert np.allclose(head.cv_scores_, np.nanmean(head.cv_fold_scores_, axis=-1))
    best = np.array(grid)[np.argmax(head.cv_scores_, axis=1)]  # first maximum = smallest C on ties
    assert np.array_equal(head.C_, best)
    if expect == "small":
        assert (head.C_ <= 0.01).all(), head.cv_scores_
    else:
        assert (head.C_ >= 10.0).all(), head.cv_scores_
    # the final model is the fit at the chosen C
    fixed = LinearSVMHead(C=float(head.C_[0]), solver=solver, tol=1e-4).fit(X, Y)
    assert np.corrcoef(head.decision_function(X)[:, 0], fixed.decision_function(X)[:, 0])[0, 1] > 0.9999


@pytest.mark.parametrize("d", [48, 128])  # w-space and kernel (per-fold Gram matrices) forms
def test_cv_torch_and_liblinear_agree_on_scores_and_choice(d):
    X, Y = make_multilabel(180, d, 3, strength=1.0, seed=12)
    grid = (0.01, 0.1, 1.0, 10.0)
    a = LinearSVMHead(C=grid, solver="torch", tol=1e-5).fit(X, Y)
    b = LinearSVMHead(C=grid, solver="liblinear", tol=1e-6, max_iter=20000).fit(X, Y)
    assert a.kernel_form_ == (d == 128)
    assert np.array_equal(a.fold_ids_, b.fold_ids_)
    assert np.allclose(a.cv_fold_scores_, b.cv_fold_scores_, atol=0.01, equal_nan=True)
    assert np.array_equal(a.C_, b.C_)


def test_ovo_global_c_by_voting_accuracy():
    X, y = make_multiclass(180, 48, 4, strength=1.0, seed=13)
    grid = (0.01, 1.0, 100.0)
    a = LinearSVMHead(mode="ovo", C=grid, solver="torch", tol=1e-5).fit(X, y)
    b = LinearSVMHead(mode="ovo", C=grid, solver="liblinear", tol=1e-6, max_iter=20000).fit(X, y)
    assert a.cv_scores_.shape == (1, 3) and (a.C_ == a.C_[0]).all()
    assert a.C_[0] == grid[int(np.argmax(a.cv_scores_[0]))]
    assert np.allclose(a.cv_scores_, b.cv_scores_, atol=0.012)
    # per-pair scope: one C per pair, binary accuracy on the pair's held-out samples
    p = LinearSVMHead(mode="ovo", C=grid, cv_scope="problem", tol=1e-5).fit(X, y)
    assert p.cv_scores_.shape == (6, 3)
    assert np.array_equal(p.C_, np.array(grid)[np.argmax(np.nan_to_num(p.cv_scores_, nan=-1), axis=1)])
    with pytest.raises(ConfigError, match="voting"):
        LinearSVMHead(mode="ovo", C=grid, scoring=lambda s, t: 0.0).fit(X, y)


def test_custom_scoring_is_called_on_binary_folds():
    X, Y = make_multilabel(120, 32, 2, strength=1.0, seed=14)
    seen = []

    def scoring(scores, labels):
        seen.append((scores.shape, set(np.unique(labels).tolist())))
        return float(np.mean(scores))

    LinearSVMHead(C=(0.1, 1.0), scoring=scoring).fit(X, Y)
    assert len(seen) == 2 * 2 * 3 and all(lab == {-1, 1} for _, lab in seen)


def test_groups_keep_views_together_and_folds_are_stratified():
    rng = np.random.default_rng(15)
    n_img, views = 60, 4
    labels = np.arange(n_img) % 3
    groups = np.repeat(rng.permutation(1000)[:n_img], views)
    y = np.repeat(labels, views)
    folds = cv_fold_ids(y, 3, groups=groups, seed=0)
    for g in np.unique(groups):
        assert len(set(folds[groups == g].tolist())) == 1
    for c in range(3):
        counts = np.bincount(folds[y == c], minlength=3) // views
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, cv_fold_ids(y, 3, groups=groups, seed=0))  # deterministic
    assert not np.array_equal(folds, cv_fold_ids(y, 3, groups=groups, seed=1))
    # through the estimator: one assignment shared by all classes, stratified on each sample's rarest label
    X, _ = make_multiclass(n_img * views, 16, 3, strength=2.0, seed=16)
    Y = np.where(y[:, None] == np.arange(3), 1, -1).astype(np.int8)
    Y[np.arange(0, n_img * views, 2 * views)[:, None] + np.arange(views), 0] = (
        1  # some images carry two labels
    )
    head = LinearSVMHead(C=(0.1, 1.0), solver="torch").fit(X, Y, groups=groups)
    assert head.fold_ids_.shape == (n_img * views,)
    for g in np.unique(groups):
        assert len(set(head.fold_ids_[groups == g].tolist())) == 1
    for j in range(3):
        counts = np.bincount(head.fold_ids_[Y[:, j] > 0], minlength=3) // views
        assert counts.max() - counts.min() <= 2
    with pytest.raises(ConfigError, match="groups"):
        cv_fold_ids(y[:8], 3, groups=np.repeat([0, 1], 4))


# ----------------------------------------------------------------------------------------------- voting


def _three_class_ovo_head() -> LinearSVMHead:
    X, y = make_multiclass(60, 8, 3, strength=4.0, seed=17)
    return LinearSVMHead(mode="ovo", C=1.0).fit(X, y + 10)  # labels 10, 11, 12


def test_ovo_voting_rules_on_hand_built_decisions():
    head = _three_class_ovo_head()
    assert head.pairs_.tolist() == [[0, 1], [0, 2], [1, 2]] and head.classes_.tolist() == [10, 11, 12]
    dec = np.array(
        [
            [1.0, 1.0, 1.0],  # 0 beats 1 and 2 -> class 0 (2 votes)
            [-1.0, 1.0, 1.0],  # 1 beats 0, 0 beats 2, 1 beats 2 -> class 1
            [-1.0, -1.0, -1.0],  # 2 beats everyone -> class 2
            [2.0, -1.0, 0.5],  # cycle, 1 vote each; confidences 0: 1.0, 1: -1.5, 2: 0.5 -> class 0
            [0.5, -2.0, 1.0],  # cycle; confidences 0: -1.5, 1: 0.5, 2: 1.0 -> class 2
            [1.0, -1.0, 1.0],  # cycle with equal confidences (0, 0, 0) -> lowest index, class 0
            [
                0.0,
                0.0,
                0.0,
            ],  # zero decision votes for the second class of the pair: 1 once, 2 twice -> class 2
        ],
        dtype=np.float32,
    )
    assert head.predict_from_decision(dec).tolist() == [10, 11, 12, 10, 12, 10, 12]


def test_predict_from_summed_view_decisions():
    X, y, Xt, yt = make_multiclass(120, 32, 3, strength=1.2, seed=18, n_test=30)
    head = LinearSVMHead(mode="ovo", C=1.0).fit(X, y)
    views = [Xt, np.abs(Xt + 0.01), Xt * 0.9]  # stand-ins for an image's jittered views
    summed = sum(head.decision_function(v) for v in views)
    pred = head.predict_from_decision(summed)
    by_hand = []
    for row in summed:
        votes = np.zeros(3)
        conf = np.zeros(3)
        for (a, b), v in zip(head.pairs_, row, strict=True):
            votes[a if v > 0 else b] += 1
            conf[a] += v
            conf[b] -= v
        top = np.nonzero(votes == votes.max())[0]
        by_hand.append(top[np.argmax(conf[top])])
    assert pred.tolist() == by_hand
    assert np.array_equal(head.predict(Xt), head.predict_from_decision(head.decision_function(Xt)))
    ovr = LinearSVMHead(mode="ovr", C=1.0).fit(X, y)
    assert np.array_equal(
        ovr.predict_from_decision(summed[:, :3] * 0 + ovr.decision_function(Xt)), ovr.predict(Xt)
    )
    with pytest.raises(ConfigError, match="decision values"):
        head.predict_from_decision(summed[:, :2])


# ----------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("mode", ["ovr", "ovo"])
def test_save_load_round_trip_without_pickle(tmp_path, mode):
    X, y = make_multiclass(120, 24, 3, strength=1.5, seed=19)
    head = LinearSVMHead(mode=mode, C=(0.1, 1.0), class_weight={1: 2, -1: 1}).fit(X, y)
    path = tmp_path / "sub" / "head.npz"
    head.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["head.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        assert all(z[k].dtype != object for k in z.files)
    assert meta["params"]["class_weight"] == {"1": 2.0, "-1": 1.0}
    with zipfile.ZipFile(path) as zf:
        assert all(name.endswith(".npy") for name in zf.namelist())
    back = LinearSVMHead.load(path)
    assert back.get_params() == head.get_params()
    assert np.array_equal(back.decision_function(X), head.decision_function(X))
    assert np.array_equal(back.predict(X), head.predict(X))
    for attr in ("C_", "cv_scores_", "fold_ids_", "classes_", "n_iter_", "converged_"):
        assert np.array_equal(getattr(back, attr), getattr(head, attr), equal_nan=attr == "cv_scores_")
    assert (back.pairs_ is None) == (mode == "ovr")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a LinearSVMHead"):
        LinearSVMHead.load(tmp_path / "junk.npz")


def test_memmap_float16_features(tmp_path):
    X, Y = make_multilabel(100, 16, 2, strength=2.0, seed=20)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "f.npy", mmap_mode="r")
    a = LinearSVMHead(C=1.0).fit(ro, Y)
    b = LinearSVMHead(C=1.0).fit(X.astype(np.float16).astype(np.float32), Y)
    assert np.allclose(a.coef_, b.coef_, atol=1e-6)
    assert a.decision_function(ro).dtype == np.float32


# ----------------------------------------------------------------------------------------------- errors


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


@pytest.mark.parametrize("solver", ["torch", "liblinear"])
def test_bad_inputs_raise_one_line_config_errors(solver):
    X, y = make_multiclass(30, 8, 3, strength=2.0, seed=21)
    head = LinearSVMHead(C=1.0, solver=solver)
    bad = X.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ConfigError) as e:
        head.fit(bad, y)
    assert "row 7" in _one_line(e)
    with pytest.raises(ConfigError) as e:
        head.fit(X, y[:-1])
    assert "30 rows" in _one_line(e)
    with pytest.raises(ConfigError) as e:
        head.fit(X, np.zeros(30, int))
    assert "single class" in _one_line(e)
    Y = np.where(y[:, None] == np.arange(3), 1, -1).astype(np.int8)
    Y[:, 1] = -1
    with pytest.raises(ConfigError) as e:
        head.fit(X, Y)
    assert "class 1 has no positive" in _one_line(e)
    with pytest.raises(ConfigError):
        LinearSVMHead(mode="ovo").fit(X, Y)  # multilabel needs ovr
    with pytest.raises(ConfigError):
        head.fit(X[:, :, None], y)
    with pytest.raises(ConfigError):
        head.fit(X, y, groups=np.arange(5))


@pytest.mark.parametrize(
    "params",
    [
        {"mode": "ova"},
        {"C": -1.0},
        {"C": []},
        {"C": (0.1, "x")},
        {"cv_folds": 1},
        {"class_weight": {2: 1.0}},
        {"difficult": "skip"},
        {"tol": 0},
        {"solver": "sag"},
        {"scoring": "ap"},
    ],
)
def test_bad_params_raise_config_error(params):
    X, y = make_multiclass(30, 8, 3, strength=2.0, seed=22)
    with pytest.raises(ConfigError) as e:
        LinearSVMHead(**params).fit(X, y)
    assert next(iter(params)) in _one_line(e)


def test_predict_checks():
    head = LinearSVMHead(C=1.0)
    with pytest.raises(ConfigError, match="not fitted"):
        head.predict(np.zeros((2, 3), np.float32))
    X, y = make_multiclass(30, 8, 3, strength=2.0, seed=23)
    head.fit(X, y)
    with pytest.raises(ConfigError, match="8"):
        head.decision_function(np.zeros((2, 5), np.float32))
