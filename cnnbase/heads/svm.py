"""Linear SVM head: one-vs-rest or one-vs-one linear SVMs on frozen features, C chosen by k-fold CV.

This is the classifier of Razavian et al. (CVPRW 2014, §3.1) and of the FAIR/VISSL "VOC07 SVM" benchmark
(PROTOCOLS.md §1.1 and §6.1), as one sklearn-style estimator, :class:`LinearSVMHead`.

**Objective.** Every binary problem minimises liblinear's L2-regularised objective with a *regularised* bias::

    0.5 * (||w||^2 + b'^2) + sum_i C * cw(y_i) * loss(y_i * (w.x_i + s * b'))      intercept_ = s * b'

where ``s = intercept_scaling`` (default 1, sklearn's default), ``cw`` the class weight of the sample's label
and ``loss`` the squared hinge ``max(0, 1 - m)^2`` (default; liblinear's L2-loss SVM, the "liblinear primal
solver" of CNNaug-SVM) or the hinge ``max(0, 1 - m)``. This is exactly what ``sklearn.svm.LinearSVC(C=C,
intercept_scaling=s, class_weight=...)`` optimises (liblinear appends the constant feature ``s`` to every
sample and regularises its weight), so the two solvers below optimise the same function and can be compared
by objective value.

**Solvers.**

* ``"liblinear"``: the reference, one ``LinearSVC`` per binary problem, per C and per fold (``dual=True``
  when the training set has fewer samples than features or the loss is the hinge, as liblinear advises;
  primal otherwise). ``n_jobs`` runs problems in parallel with joblib.
* ``"torch"``: squared hinge only. A batched, exact (generalised-Hessian) Newton method that solves every
  binary problem of a fit together, in float32, with one conjugate-gradient inner solver per Newton step and
  an exact line search on the piecewise-quadratic objective along the step. All binary problems × all CV
  folds advance together as the columns of one matrix, so the work is large matrix products and the
  parallelism comes from the BLAS (``torch.get_num_threads()`` threads). Two forms of the same iteration:

  - *primal* (``w``-space, TRON-like Newton-CG with a Jacobi preconditioner), used for one-vs-rest when the
    training set has more samples than ~1.5x the features;
  - *kernel* (``w = sum_i beta_i x_i``, Chapelle 2007 "Training a support vector machine in the primal",
    each Newton step solves ``(K_II + diag(1 / (2 c_I))) beta_I = y_I`` on the active set ``I`` by CG), used
    for one-vs-rest with fewer samples (one shared Gram matrix ``K = X X^T + s^2`` for every problem, C and
    fold) and always for one-vs-one, where each pair only sees its two classes' samples: the pair's Gram
    block is gathered from ``K`` and pairs are solved in batches (19,900 pairs for 200 classes).

  The C grid is walked from small to large C with warm starts (one-vs-rest) or solved as extra columns of
  the same batch (one-vs-one, where the cost is reading the Gram blocks, not the arithmetic). The final model
  at the chosen C starts from the mean of the fold solutions. Stopping rule (per problem):
  ``||grad f(w)|| <= tol * ||grad f(0)||`` in ``w``-space (liblinear's primal criterion, without its
  class-balance factor), at most ``max_iter`` Newton steps.
* ``"auto"``: ``"torch"`` for the squared hinge, ``"liblinear"`` for the hinge (the torch solver does not
  implement the non-smooth hinge; a hinge with ``solver="torch"`` is a ConfigError).

**Cross-validation.** With a sequence ``C``, each binary problem (one-vs-rest) picks its own C by
``cv_folds``-fold CV, scored by ``scoring(held-out scores, held-out labels in {1, -1})`` (default: VOC2007
11-point AP); the mean over folds is ``cv_scores_``. For one-vs-one, ``cv_scope="auto"`` picks **one global
C** (as libsvm's grid search and Razavian's single C per dataset): held-out samples are classified by voting
over all pairs trained without their fold, and the C with the best held-out multiclass accuracy wins;
``cv_scope="problem"`` instead picks a C per pair with the binary ``scoring`` (default accuracy) on the pair's
held-out samples. Ties between C values go to the **smaller C**; a fold whose training or held-out part lacks
one of the two labels is skipped (NaN); a problem whose every fold is NaN takes the C that is best on average
over the other problems. Folds are deterministic given ``seed``: groups (the jittered views of one image) are
shuffled with ``numpy.random.default_rng(seed)``, sorted by label and dealt round-robin, so every fold gets a
stratified share and a group never straddles two folds. One-vs-rest multilabel problems are stratified per
class (each class has its own fold assignment, as VISSL runs one ``cross_val_score`` per class); multiclass
problems share one assignment stratified by class.

**Voting (one-vs-one).** Pairs are ``(a, b)`` for ``a < b`` in lexicographic order (as sklearn's SVC); a
decision value ``> 0`` is a vote for ``a``, ``<= 0`` for ``b``. The class with most votes wins; ties go to
the larger summed confidence (``+dec`` for ``a``, ``-dec`` for ``b``), then to the lowest class index.
:meth:`LinearSVMHead.predict_from_decision` applies that rule to any decision matrix, so the caller can sum
the decision values of an image's jittered views first (Razavian: "sum over all the responses").

**Files.** :meth:`LinearSVMHead.save` writes one ``.npz`` (``numpy.savez``) holding the fitted arrays and a
JSON string of the parameters, written to a temporary file and moved into place with ``os.replace``; it is
readable with ``np.load(path, allow_pickle=False)``. Nothing is pickled. A ``scoring`` callable is not saved
(its name is); a loaded head predicts exactly as the saved one.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from cnnbase.errors import ConfigError

__all__ = ["LinearSVMHead", "cv_fold_ids"]

_log = logging.getLogger(__name__)

_FORMAT = "cnnbase.heads.svm.LinearSVMHead"
_FORMAT_VERSION = 1
_ARRAY_ATTRS = (
    "coef_",
    "intercept_",
    "classes_",
    "pairs_",
    "C_",
    "Cs_",
    "cv_scores_",
    "cv_fold_scores_",
    "fold_ids_",
    "n_iter_",
    "converged_",
    "objective_",
)
_SCALAR_ATTRS = ("multilabel_", "n_features_in_", "solver_", "kernel_form_", "fit_time_")

# Torch solver internals (not parameters: they change speed, not the optimum).
_CG_RTOL = 0.1  # inner CG stops when its residual is below this fraction of the gradient (TRON's eps_cg)
_CG_MAXITER = 200  # per Newton step; a truncated step is still a descent step
_STALL = 3  # stop after this many Newton steps without a relative objective decrease of _STALL_RTOL
_STALL_RTOL = 1e-6  # (float32's floor: at large C, tol on the gradient can be out of reach)
_LS_MAXITER = 30  # safeguarded Newton iterations of the exact line search
_GRAM_MAX_BYTES = 4 << 30  # above this, one-vs-one gathers each pair's Gram block from X instead of K
_CHUNK_BYTES = 256 << 20  # memory per batch of one-vs-one pairs
_PREDICT_ROWS = 4096  # rows per block in decision_function / voting


# ============================================================================================ parameters


def _options(*values: object) -> Callable[[object], bool]:
    def check(v: object) -> bool:
        return isinstance(v, str) and v in values

    check.__doc__ = " or ".join(repr(v) for v in values)
    return check


def _number(kind: type, low: float, high: float | None = None, *, open_low: bool = False) -> Callable[[object], bool]:
    def check(v: object) -> bool:
        if isinstance(v, bool) or not isinstance(v, kind):
            return False
        v = float(v)  # type: ignore[arg-type]
        return math.isfinite(v) and (v > low if open_low else v >= low) and (high is None or v <= high)

    word = "an integer" if kind is Integral else "a number"
    check.__doc__ = f"{word} {'>' if open_low else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
    return check


def _none(v: object) -> bool:
    """None"""
    return v is None


def _c_grid(v: object) -> bool:
    """a positive number or a non-empty sequence of positive numbers"""
    pos = _number(Real, 0.0, open_low=True)
    if pos(v):
        return True
    if isinstance(v, (str, bytes)) or not isinstance(v, (Sequence, np.ndarray)):
        return False
    return len(v) > 0 and all(pos(c) or (isinstance(c, np.floating | np.integer) and pos(float(c))) for c in v)


def _class_weight(v: object) -> bool:
    """None, 'balanced' or a dict {1: w, -1: w} of positive weights"""
    if v is None or v == "balanced":
        return True
    return (
        isinstance(v, dict)
        and set(v) <= {1, -1}
        and all(_number(Real, 0.0, open_low=True)(w) for w in v.values())
    )


def _callable(v: object) -> bool:
    """a callable scoring(scores_1d, labels_1d) -> float"""
    return callable(v)


# ============================================================================================ folds


def cv_fold_ids(strata: np.ndarray, n_splits: int, *, groups: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Deterministic stratified, group-aware fold assignment.

    Groups (default: one per sample) are shuffled with ``numpy.random.default_rng(seed)``, stably sorted by
    their stratum (the label of the group's first sample) and dealt to folds round-robin, so each stratum is
    split as evenly as possible and all samples of a group land in the same fold.

    Args:
        strata: ``(n,)`` labels to stratify on (class index, or ``{1, -1, 0}`` for one binary problem).
        n_splits: number of folds (>= 2, at most the number of groups).
        groups: ``(n,)`` group ids; samples sharing an id share a fold.
        seed: seed of the shuffle.

    Returns:
        ``(n,)`` int8 fold index in ``[0, n_splits)``.

    Example:
        >>> cv_fold_ids(np.array([0, 0, 0, 1, 1, 1]), 3, seed=0).tolist().count(0)
        2
    """
    strata = np.asarray(strata).reshape(-1)
    n = strata.shape[0]
    if groups is None:
        inverse = np.arange(n)
        n_groups = n
    else:
        _, first, inverse = np.unique(np.asarray(groups).reshape(-1), return_index=True, return_inverse=True)
        n_groups = first.size
    if n_splits > n_groups:
        raise ConfigError(
            f"cv_folds={n_splits} but the training set has only {n_groups} "
            f"{'groups' if groups is not None else 'samples'}; lower cv_folds or pass a fixed C"
        )
    g_stratum = strata if groups is None else strata[first]
    perm = np.random.default_rng(seed).permutation(n_groups)
    order = perm[np.argsort(g_stratum[perm], kind="stable")]
    fold_of_group = np.empty(n_groups, dtype=np.int8)
    fold_of_group[order] = np.arange(n_groups) % n_splits
    return fold_of_group[inverse]


# ============================================================================================ scoring


def _voc07_ap_fallback(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC2007 11-point AP (used only if cnnbase.metrics is not importable)."""
    keep = labels != 0
    s, y = scores[keep], labels[keep]
    npos = int((y > 0).sum())
    if npos == 0:
        return float("nan")
    y = y[np.argsort(-s, kind="stable")]
    tp = np.cumsum(y > 0)
    rec, prec = tp / npos, tp / np.arange(1, y.size + 1)
    env = np.maximum.accumulate(prec[::-1])[::-1]
    thr = np.array([0.1 * k for k in range(6)] + [1.0 - 0.1 * k for k in range(4, -1, -1)])
    first = np.searchsorted(rec, thr, side="left")
    return float(sum(env[i] if i < rec.size else 0.0 for i in first) / 11)


def _default_ap() -> Callable[[np.ndarray, np.ndarray], float]:
    try:
        from cnnbase.metrics import voc07_ap  # lazy: metrics is a sibling stage
    except ImportError:  # pragma: no cover - only while the metrics package is unavailable
        return _voc07_ap_fallback
    return voc07_ap


def _binary_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.where(scores > 0, 1, -1) == labels))


# ============================================================================================ torch solver


def _cg(
    matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, thresh: torch.Tensor, maxiter: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """CG from 0 on independent SPD systems, one per column (reduction over dim -2).

    A column stops (its step size becomes 0) once its residual norm is at most ``thresh`` (per column).
    Returns the solution, ``matvec`` of it (by recurrence), and the number of iterations.
    No preconditioner: a Jacobi one slowed these systems down (the bias column dominates the diagonal).
    """
    tiny = torch.finfo(rhs.dtype).tiny
    x = torch.zeros_like(rhs)
    ax = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = (r * r).sum(-2)
    active = rr.sqrt() > thresh
    it = 0
    while it < maxiter and bool(active.any()):
        ap = matvec(p)
        alpha = torch.where(active, rr / (p * ap).sum(-2).clamp_min(tiny), 0.0).unsqueeze(-2)
        x.add_(alpha * p)
        ax.add_(alpha * ap)
        r.sub_(alpha * ap)
        rr_new = (r * r).sum(-2)
        active = active & (rr_new.sqrt() > thresh)
        beta = torch.where(active, rr_new / rr.clamp_min(tiny), 0.0).unsqueeze(-2)
        p = r + beta * p
        rr = rr_new
        it += 1
    return x, ax, it


def _cg_kernel(
    G: torch.Tensor, D: torch.Tensor, u: torch.Tensor, Gu: torch.Tensor, thresh: torch.Tensor, maxiter: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The w-space Newton system ``(I + 2 X^T D X) s = -X^T u`` solved by CG in kernel coordinates.

    Every w-space vector is ``X^T`` times a coefficient vector and w-space inner products are ``a^T G b``.
    Keeping ``G @ pi`` and ``G @ rho`` up to date by recurrence leaves one product with ``G`` per iteration
    (``G @ (D * G pi)``), so this is exactly the primal Newton-CG (hence a descent step however early CG
    stops) at the cost of one ``(m x m)`` product per step instead of two ``(n x p)`` ones.

    Returns:
        ``sigma`` with ``s = X^T sigma``, ``G @ sigma``, iterations.
    """
    tiny = torch.finfo(u.dtype).tiny
    sigma = torch.zeros_like(u)
    gsigma = torch.zeros_like(u)
    rho = -u
    grho = -Gu
    pi = rho.clone()
    gpi = grho.clone()
    rr = (rho * grho).sum(-2)
    active = rr.clamp_min(0).sqrt() > thresh
    it = 0
    while it < maxiter and bool(active.any()):
        eta = pi + 2 * D * gpi  # coefficients of H p
        alpha = torch.where(active, rr / (gpi * eta).sum(-2).clamp_min(tiny), 0.0).unsqueeze(-2)
        geta = gpi + 2 * (G @ (D * gpi))
        sigma.add_(alpha * pi)
        gsigma.add_(alpha * gpi)
        rho.sub_(alpha * eta)
        grho.sub_(alpha * geta)
        rr_new = (rho * grho).sum(-2)
        active = active & (rr_new.clamp_min(0).sqrt() > thresh)
        beta = torch.where(active, rr_new / rr.clamp_min(tiny), 0.0).unsqueeze(-2)
        pi = rho + beta * pi
        gpi = grho + beta * gpi
        rr = rr_new
        it += 1
    return sigma, gsigma, it


def _line_search(m0: torch.Tensor, dm: torch.Tensor, cw: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Exact minimiser over t >= 0 of phi(t) = t*b + t^2*e/2 + sum cw * max(0, m0 + t*dm)^2 (per column).

    phi' is piecewise linear and increasing; safeguarded Newton from t = 1 (the full Newton step) with a
    bracket, so it converges in a few iterations whatever the kinks.
    """
    t = torch.ones_like(b)
    lo = torch.zeros_like(b)
    hi = torch.full_like(b, math.inf)
    for _ in range(_LS_MAXITER):
        m = m0 + t.unsqueeze(-2) * dm
        cwa = cw * (m > 0)
        d1 = b + t * e + 2 * (cwa * dm * m).sum(-2)
        d2 = e + 2 * (cwa * dm * dm).sum(-2)
        lo = torch.where(d1 < 0, t, lo)
        hi = torch.where(d1 > 0, t, hi)
        tn = t - d1 / d2.clamp_min(torch.finfo(b.dtype).tiny)
        inside = (tn > lo) & (tn < hi)
        tn = torch.where(inside, tn, torch.where(torch.isfinite(hi), 0.5 * (lo + hi), 2 * t))
        tn = torch.where(d1 == 0, t, tn)
        step = (tn - t).abs().max()
        t = tn
        if float(step) <= 1e-6 * max(1.0, float(t.abs().max())):
            break
    return t


def _update_stall(stall: torch.Tensor, best: torch.Tensor, obj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Count consecutive Newton steps that lowered the objective by less than float32 can resolve.

    At large C the gradient cannot be computed to better than ~``2 C * eps * |scores|``, so ``tol`` may be out
    of reach; the objective then stops decreasing and the problem is as solved as float32 allows.
    """
    stall = torch.where(obj < best * (1 - _STALL_RTOL), 0, stall + 1)
    return stall, torch.minimum(best, obj)


def _newton_primal(
    X: torch.Tensor,
    Y: torch.Tensor,
    Cw: torch.Tensor,
    W0: torch.Tensor | None,
    *,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Squared-hinge SVMs in w-space (Newton-CG with exact line search), all columns at once.

    Args:
        X: ``(n, p)`` float32 features with the bias column ``s`` appended.
        Y: ``(n, q)`` labels in ``{1, -1}`` (anything where ``Cw == 0``).
        Cw: ``(n, q)`` per-sample cost ``C * class_weight`` (0 = not in that problem's training set).
        W0: ``(p, q)`` warm start or None.

    Returns:
        ``W (p, q)``, scores ``X @ W`` ``(n, q)``, Newton iterations ``(q,)``, converged flags ``(q,)``.
        Converged columns leave the batch, so the matrix products shrink as problems finish.
    """
    n, p = X.shape
    q = Y.shape[1]
    W = torch.zeros(p, q, dtype=X.dtype) if W0 is None else W0.clone()
    z = torch.zeros(n, q, dtype=X.dtype) if W0 is None else X @ W
    n_iter = np.zeros(q, dtype=np.int64)
    conv = np.zeros(q, dtype=bool)
    act = torch.arange(q)
    Wa, za, Ya, Ca = W, z, Y, Cw
    stall = torch.zeros(q, dtype=torch.int64)
    best = torch.full((q,), math.inf)
    for it in range(max_iter + 1):
        if it:
            za = X @ Wa  # exact scores each Newton step (no drift from the CG recurrences)
        m0 = 1 - Ya * za
        D = Ca * (m0 > 0)
        g = Wa - 2 * (X.T @ (D * m0 * Ya))
        gn = g.norm(dim=0)
        wn = Wa.norm(dim=0)
        stall, best = _update_stall(stall, best, 0.5 * wn * wn + (D * m0 * m0).sum(0))
        done = (gn <= tol * wn) | (Ca.sum(0) == 0) | (stall >= _STALL)
        conv[act[done].numpy()] = True
        if it == max_iter or bool(done.all()):
            break
        if bool(done.any()):
            W[:, act], z[:, act] = Wa, za
            keep = ~done
            act, Wa, za, Ya, Ca, m0, D, g, gn, stall, best = (
                act[keep], Wa[:, keep], za[:, keep], Ya[:, keep], Ca[:, keep], m0[:, keep], D[:, keep], g[:, keep],
                gn[keep], stall[keep], best[keep],
            )
        s, _, _ = _cg(lambda V, D=D: V + 2 * (X.T @ (D * (X @ V))), -g, _CG_RTOL * gn, _CG_MAXITER)
        dz = X @ s
        dm = -Ya * dz
        t = _line_search(m0, dm, Ca, (Wa * s).sum(0), (s * s).sum(0))
        Wa = Wa + t * s
        za = za + t * dz
        n_iter[act.numpy()] += 1
    W[:, act], z[:, act] = Wa, za
    return W, z, n_iter, conv


def _newton_kernel(
    G: torch.Tensor,
    Y: torch.Tensor,
    Cw: torch.Tensor,
    B0: torch.Tensor | None,
    *,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Squared-hinge SVMs in kernel form ``w = X^T beta``, batched over groups and columns.

    The same Newton-CG iteration as :func:`_newton_primal` (same iterates, same stopping rule), written in
    the coefficients ``beta`` so that only products with the Gram matrices ``G`` are needed
    (see :func:`_cg_kernel`).

    Args:
        G: ``(P, m, m)`` Gram matrices (bias ``s^2`` included), one per group (``P = 1`` for one-vs-rest).
        Y: ``(P, m, q)`` labels in ``{1, -1}`` (anything where ``Cw == 0``).
        Cw: ``(P, m, q)`` per-sample costs, 0 = not in that problem's training set.
        B0: ``(P, m, q)`` warm start or None.

    Returns:
        ``beta (P, m, q)``, scores ``G @ beta``, Newton iterations ``(P, q)``, converged ``(P, q)``.
        Finished columns (``P == 1``) or groups (``P > 1``) leave the batch.
    """
    P, m, q = Y.shape
    B = torch.zeros_like(Y) if B0 is None else B0.clone()
    f = torch.zeros_like(Y) if B0 is None else G @ B
    n_iter = np.zeros((P, q), dtype=np.int64)
    conv = np.zeros((P, q), dtype=bool)
    by_col = P == 1
    act = torch.arange(q if by_col else P)

    def put(dst: torch.Tensor, src: torch.Tensor) -> None:
        if by_col:
            dst[:, :, act] = src
        else:
            dst[act] = src

    Ga, Ba, fa, Ya, Ca = G, B, f, Y, Cw
    stall = torch.zeros((P, q), dtype=torch.int64)
    best = torch.full((P, q), math.inf)
    for it in range(max_iter + 1):
        if it:
            fa = Ga @ Ba  # exact scores each Newton step (no drift from the CG recurrences)
        m0 = 1 - Ya * fa
        D = Ca * (m0 > 0)
        u = Ba - 2 * D * m0 * Ya  # gradient = X^T u
        Gu = Ga @ u
        gn = (u * Gu).sum(-2).clamp_min(0).sqrt()
        wn2 = (Ba * fa).sum(-2).clamp_min(0)
        stall, best = _update_stall(stall, best, 0.5 * wn2 + (D * m0 * m0).sum(-2))
        done = (gn <= tol * wn2.sqrt()) | (Ca.sum(-2) == 0) | (stall >= _STALL)
        if by_col:
            conv[0, act.numpy()] |= done[0].numpy()
        else:
            conv[act.numpy()] |= done.numpy()
        if it == max_iter or bool(done.all()):
            break
        keep = ~done[0] if by_col else ~done.all(dim=1)
        if not bool(keep.all()):
            put(B, Ba)
            put(f, fa)
            act = act[keep]
            if by_col:
                Ba, fa, Ya, Ca, m0, D, u, Gu = (a[:, :, keep] for a in (Ba, fa, Ya, Ca, m0, D, u, Gu))
                gn, done, stall, best = (a[:, keep] for a in (gn, done, stall, best))
            else:
                Ga, Ba, fa, Ya, Ca, m0, D, u, Gu, gn, done, stall, best = (
                    a[keep] for a in (Ga, Ba, fa, Ya, Ca, m0, D, u, Gu, gn, done, stall, best)
                )
        sigma, gsigma, _ = _cg_kernel(Ga, D, u, Gu, _CG_RTOL * gn, _CG_MAXITER)
        dm = -Ya * gsigma
        t = _line_search(m0, dm, Ca, (fa * sigma).sum(-2), (sigma * gsigma).sum(-2))
        t = torch.where(done, 0.0, t).unsqueeze(-2)
        Ba = Ba + t * sigma
        fa = fa + t * gsigma
        if by_col:
            n_iter[0, act.numpy()] += 1
        else:
            n_iter[act.numpy()] += (~done).numpy()
    put(B, Ba)
    put(f, fa)
    return B, f, n_iter, conv


def _costs(Y: torch.Tensor, T: torch.Tensor, C: torch.Tensor, class_weight: object) -> torch.Tensor:
    """Per-sample costs ``C * class_weight(y)`` for columns of binary problems, 0 outside training.

    ``Y`` in ``{1, -1, 0}`` (0 = not in the problem), ``T`` bool training mask, ``C`` broadcastable to a row.
    ``"balanced"`` follows sklearn: ``n_train / (2 * n_label)`` on each column's training samples.
    """
    pos = (Y > 0) & T
    neg = (Y < 0) & T
    if class_weight is None:
        wp = wn = torch.ones((), dtype=C.dtype)
    elif class_weight == "balanced":
        n_pos = pos.sum(-2, keepdim=True).to(C.dtype)
        n_neg = neg.sum(-2, keepdim=True).to(C.dtype)
        wp = (n_pos + n_neg) / (2 * n_pos.clamp_min(1))
        wn = (n_pos + n_neg) / (2 * n_neg.clamp_min(1))
    else:
        cw = dict(class_weight)  # type: ignore[call-overload]
        wp = torch.tensor(float(cw.get(1, 1.0)), dtype=C.dtype)
        wn = torch.tensor(float(cw.get(-1, 1.0)), dtype=C.dtype)
    return C * (pos * wp + neg * wn)


# ============================================================================================ the estimator


class LinearSVMHead(BaseEstimator):
    """Linear SVMs on frozen features: one-vs-rest or one-vs-one with voting, C by k-fold CV.

    See the module docstring for the objective, the solvers, the CV and the voting rules.

    Args:
        mode: ``"ovr"`` (one-vs-rest; required for multilabel targets: VOC, attributes) or ``"ovo"``
            (one-vs-one with voting: MIT-67, CUB, Flowers in Razavian 2014).
        C: a positive number (fixed C, no CV) or a sequence (grid searched by CV; sorted, duplicates dropped).
        cv_folds: number of CV folds (>= 2).
        cv_scope: ``"auto"`` (one C per binary problem for ovr, one global C for ovo), ``"problem"``
            or ``"global"`` (one C for all problems, best mean CV score; for ovo the voting accuracy).
        loss: ``"squared_hinge"`` (liblinear L2-loss) or ``"hinge"`` (L1-loss; liblinear only).
        class_weight: None, ``"balanced"`` or ``{1: w_pos, -1: w_neg}`` (VISSL: ``{1: 2, -1: 1}``); multiplies
            C per sample, as liblinear's per-class C.
        difficult: multilabel training labels 0: ``"negative"`` (VISSL/FAIR: difficult as negatives) or
            ``"ignore"`` (left out of training and of CV scores). Test-time exclusion is the metric's job.
        intercept_scaling: the constant ``s`` appended to every sample (liblinear's bias feature; its weight
            is regularised like the others).
        solver: ``"auto"``, ``"liblinear"`` or ``"torch"``.
        tol: stopping tolerance (liblinear's ``tol``; torch: relative gradient norm).
        max_iter: liblinear iterations / torch Newton steps per problem.
        seed: seed of the CV folds (and of liblinear's coordinate order).
        n_jobs: liblinear only: parallel jobs over problems (joblib). The torch solver uses
            ``torch.get_num_threads()`` threads.
        scoring: ``callable(scores_1d, labels_1d_in_{1,-1}) -> float`` (higher is better) for the CV of
            binary problems; None = VOC2007 11-point AP (ovr), accuracy (ovo per pair). Not used by the global
            one-vs-one CV (voting accuracy).

    Fitted attributes:
        coef_: ``(n_problems, d)`` float32. intercept_: ``(n_problems,)`` float32 (``s * b'``).
        classes_: class labels (multiclass) or ``arange(n_classes)`` (multilabel).
        pairs_: ``(n_pairs, 2)`` class indices ``(a, b)``, ``a < b`` (ovo; ``None`` for ovr).
        Cs_: the sorted C grid. C_: ``(n_problems,)`` chosen C. cv_scores_: ``(n_problems, n_C)`` mean CV
        score (``(1, n_C)`` for a global choice; NaN for a fixed C). cv_fold_scores_: the same per fold.
        fold_ids_: ``(n,)`` or ``(n_problems, n)`` fold of each sample (None for a fixed C).
        n_iter_, converged_, objective_: per problem of the final fit. multilabel_, n_features_in_, solver_,
        kernel_form_ (torch form used), fit_time_ (seconds).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = np.abs(rng.normal(size=(60, 8))).astype(np.float32); y = np.repeat([0, 1, 2], 20)
        >>> X[np.arange(60), y] += 3
        >>> head = LinearSVMHead(mode="ovo", C=1.0).fit(X, y)
        >>> head.coef_.shape, float((head.predict(X) == y).mean())
        ((3, 8), 1.0)
    """

    _parameter_constraints: dict[str, list[Callable[[object], bool]]] = {
        "mode": [_options("ovr", "ovo")],
        "C": [_c_grid],
        "cv_folds": [_number(Integral, 2)],
        "cv_scope": [_options("auto", "problem", "global")],
        "loss": [_options("squared_hinge", "hinge")],
        "class_weight": [_class_weight],
        "difficult": [_options("negative", "ignore")],
        "intercept_scaling": [_number(Real, 0.0, open_low=True)],
        "solver": [_options("auto", "liblinear", "torch")],
        "tol": [_number(Real, 0.0, open_low=True)],
        "max_iter": [_number(Integral, 1)],
        "seed": [_number(Integral, 0)],
        "n_jobs": [_none, _number(Integral, -1)],
        "scoring": [_none, _callable],
    }

    def __init__(
        self,
        *,
        mode: str = "ovr",
        C: float | Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0),
        cv_folds: int = 3,
        cv_scope: str = "auto",
        loss: str = "squared_hinge",
        class_weight: None | str | dict[int, float] = None,
        difficult: str = "negative",
        intercept_scaling: float = 1.0,
        solver: str = "auto",
        tol: float = 1e-4,
        max_iter: int = 1000,
        seed: int = 0,
        n_jobs: int | None = None,
        scoring: Callable[[np.ndarray, np.ndarray], float] | None = None,
    ) -> None:
        self.mode = mode
        self.C = C
        self.cv_folds = cv_folds
        self.cv_scope = cv_scope
        self.loss = loss
        self.class_weight = class_weight
        self.difficult = difficult
        self.intercept_scaling = intercept_scaling
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.seed = seed
        self.n_jobs = n_jobs
        self.scoring = scoring

    # ------------------------------------------------------------------------------------------ checks

    def _validate_params(self) -> None:
        for name, checks in self._parameter_constraints.items():
            value = getattr(self, name)
            if not any(check(value) for check in checks):
                allowed = "; or ".join(check.__doc__ or "?" for check in checks)
                raise ConfigError(f"LinearSVMHead: {name}={value!r} is invalid; use {allowed}")
        if self.mode == "ovo" and self.scoring is not None and self._scope() == "global":
            raise ConfigError(
                "LinearSVMHead: scoring is for binary problems, but mode='ovo' with a global C is chosen by "
                "held-out voting accuracy; drop scoring or set cv_scope='problem'"
            )
        if self.solver == "torch" and self.loss == "hinge":
            raise ConfigError(
                "LinearSVMHead: solver='torch' optimises the squared hinge only; use loss='squared_hinge', "
                "or solver='liblinear' (solver='auto' routes the hinge to liblinear)"
            )

    def _scope(self) -> str:
        if self.cv_scope != "auto":
            return self.cv_scope
        return "global" if self.mode == "ovo" else "problem"

    def _grid(self) -> np.ndarray:
        c = np.atleast_1d(np.asarray(self.C, dtype=np.float64))
        return np.unique(c)

    def _resolved_solver(self) -> str:
        if self.solver != "auto":
            return self.solver
        return "torch" if self.loss == "squared_hinge" else "liblinear"

    @staticmethod
    def _check_features(X: object, n_features: int | None = None, what: str = "X") -> np.ndarray:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        X = np.asarray(X) if not isinstance(X, np.ndarray) else X
        if X.ndim != 2:
            raise ConfigError(f"{what} must be a 2-D (n_samples, n_features) array, got shape {X.shape}")
        if X.dtype.kind != "f":
            raise ConfigError(f"{what} must hold floats (float16/float32/float64), got dtype {X.dtype}")
        if X.shape[0] == 0:
            raise ConfigError(f"{what} has no rows")
        if n_features is not None and X.shape[1] != n_features:
            raise ConfigError(f"{what} has {X.shape[1]} features but the head was fitted on {n_features}")
        return X

    def _to_torch(self, X: np.ndarray, *, bias: bool) -> torch.Tensor:
        """float32 copy of X (block by block, memmap friendly), bias column appended; rejects NaN/inf."""
        n, d = X.shape
        out = torch.empty((n, d + 1) if bias else (n, d), dtype=torch.float32)
        if bias:
            out[:, d] = float(self.intercept_scaling)
        for i in range(0, n, _PREDICT_ROWS):
            block = torch.from_numpy(np.ascontiguousarray(X[i : i + _PREDICT_ROWS], dtype=np.float32))
            if not bool(torch.isfinite(block).all()):
                bad = i + int(torch.nonzero(~torch.isfinite(block).all(dim=1))[0, 0])
                raise ConfigError(f"X row {bad} contains NaN or inf; fix or drop that sample's features")
            out[i : i + block.shape[0], :d] = block
        return out

    # ------------------------------------------------------------------------------------------ fit

    def fit(self, X: np.ndarray, Y: np.ndarray, *, groups: np.ndarray | None = None) -> LinearSVMHead:
        """Train all binary problems (and pick C by CV when ``C`` is a sequence).

        Args:
            X: ``(n, d)`` float features (float16/float32/float64; ``np.memmap`` is read block by block).
            Y: ``(n,)`` integer class labels (multiclass), or ``(n, n_classes)`` in ``{1, -1, 0}``
                (multilabel, ``mode="ovr"`` only; 0 = difficult, see ``difficult``).
            groups: ``(n,)`` group ids: samples of one group (the views of one image) share a CV fold.

        Returns:
            self.

        Raises:
            ConfigError: bad parameter, NaN/inf features, shape mismatch, or a problem with one class only.
        """
        t_start = time.perf_counter()
        self._validate_params()
        X = self._check_features(X)
        n, d = X.shape
        Y = np.asarray(Y)
        if Y.shape[0] != n:
            raise ConfigError(f"X has {n} rows but the labels have {Y.shape[0]}; pass one label row per sample")
        if groups is not None:
            groups = np.asarray(groups).reshape(-1)
            if groups.shape[0] != n:
                raise ConfigError(f"X has {n} rows but groups has {groups.shape[0]}; pass one group id per sample")
        if Y.ndim == 2:
            if self.mode != "ovr":
                raise ConfigError("multilabel targets (2-D Y) need mode='ovr'; one-vs-one needs one class per sample")
            if Y.dtype.kind not in "iu" and not (Y.dtype.kind == "f" and np.all(Y == np.round(Y))):
                raise ConfigError(f"multilabel Y must be integers in {{1, -1, 0}}, got dtype {Y.dtype}")
            if not np.isin(Y, (1, -1, 0)).all():
                raise ConfigError("multilabel Y must hold 1 (positive), -1 (negative) or 0 (difficult) only")
            Yb = Y.astype(np.int8)
            if self.difficult == "negative":
                Yb = np.where(Yb == 0, -1, Yb).astype(np.int8)
            for j in range(Yb.shape[1]):
                if not (Yb[:, j] > 0).any() or not (Yb[:, j] < 0).any():
                    which = "positive" if not (Yb[:, j] > 0).any() else "negative"
                    raise ConfigError(f"class {j} has no {which} training sample; every class needs both to train an SVM")
            self.multilabel_ = True
            self.classes_ = np.arange(Y.shape[1])
            y_idx = None
        elif Y.ndim == 1:
            if Y.dtype.kind not in "iu" and not (Y.dtype.kind == "f" and np.all(Y == np.round(Y))):
                raise ConfigError(f"Y must hold integer class labels, got dtype {Y.dtype}")
            classes, y_idx = np.unique(Y, return_inverse=True)
            if classes.size < 2:
                raise ConfigError(
                    f"the training set has a single class ({classes.tolist()}); an SVM needs at least two"
                )
            self.multilabel_ = False
            self.classes_ = classes
            Yb = None
        else:
            raise ConfigError(f"Y must be (n,) class labels or (n, n_classes) multilabel, got shape {Y.shape}")

        self.n_features_in_ = d
        self.solver_ = self._resolved_solver()
        self.Cs_ = self._grid()
        cv = self.Cs_.size > 1
        n_classes = self.classes_.size
        self.pairs_ = (
            np.array(list(itertools.combinations(range(n_classes), 2)), dtype=np.int64).reshape(-1, 2)
            if self.mode == "ovo"
            else None
        )

        # Binary problems of one-vs-rest: training labels {1, -1, 0 = left out}
        if self.mode == "ovr" and Yb is None:
            Yb = np.where(y_idx[:, None] == np.arange(n_classes)[None, :], 1, -1).astype(np.int8)

        # Folds
        self.fold_ids_ = None
        if cv:
            if self.mode == "ovr" and self.multilabel_:  # stratified on {1, -1, 0}: difficult ones spread too
                self.fold_ids_ = np.stack(
                    [cv_fold_ids(Y[:, j], self.cv_folds, groups=groups, seed=self.seed) for j in range(Y.shape[1])]
                )
            else:
                self.fold_ids_ = cv_fold_ids(y_idx, self.cv_folds, groups=groups, seed=self.seed)

        if self.mode == "ovr":
            fit = self._fit_ovr_torch if self.solver_ == "torch" else self._fit_ovr_liblinear
            fit(X, Yb)
        else:
            fit = self._fit_ovo_torch if self.solver_ == "torch" else self._fit_ovo_liblinear
            fit(X, y_idx)
        if not self.converged_.all():
            warnings.warn(
                f"LinearSVMHead: {int((~self.converged_).sum())} of {self.converged_.size} problems did not reach "
                f"tol={self.tol} in max_iter={self.max_iter}; raise max_iter or tol",
                stacklevel=2,
            )
        self.fit_time_ = time.perf_counter() - t_start
        return self

    # ------------------------------------------------------------------------------------------ CV helpers

    def _fold_masks(self, n_problems: int) -> np.ndarray:
        """``(n_problems, n)`` fold ids."""
        f = self.fold_ids_
        return np.broadcast_to(f, (n_problems, f.shape[-1])) if f.ndim == 1 else f

    def _score_fold(self, scores: np.ndarray, labels: np.ndarray, scorer: Callable[..., float]) -> float:
        """Score one held-out fold; NaN when it lacks one of the two labels."""
        keep = labels != 0
        s, y = scores[keep], labels[keep]
        if not (y > 0).any() or not (y < 0).any():
            return float("nan")
        return float(scorer(s, y))

    def _choose(self, cv_fold_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean CV score per problem and C; chosen grid index per problem (ties → smaller C)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(cv_fold_scores, axis=-1)  # (n_problems, n_C)
            overall = np.nanmean(mean, axis=0)
        fallback = int(np.nanargmax(overall)) if np.isfinite(overall).any() else self.Cs_.size // 2
        if self._scope() == "global":
            return overall[None, :], np.full(mean.shape[0], fallback)
        filled = np.where(np.isnan(mean), -np.inf, mean)
        choice = np.argmax(filled, axis=1)  # first max = smallest C
        choice[~np.isfinite(mean).any(axis=1)] = fallback
        return mean, choice

    def _finish(self, W: np.ndarray, C_idx: np.ndarray, n_iter: np.ndarray, conv: np.ndarray, obj: np.ndarray) -> None:
        d = self.n_features_in_
        self.coef_ = np.ascontiguousarray(W[:, :d], dtype=np.float32)
        self.intercept_ = (W[:, d] * float(self.intercept_scaling)).astype(np.float32)
        self.C_ = self.Cs_[C_idx].astype(np.float64)
        self.n_iter_ = np.asarray(n_iter, dtype=np.int64)
        self.converged_ = np.asarray(conv, dtype=bool)
        self.objective_ = np.asarray(obj, dtype=np.float64)

    # ------------------------------------------------------------------------------------------ ovr / torch

    def _fit_ovr_torch(self, X: np.ndarray, Yb: np.ndarray) -> None:
        Xt = self._to_torch(X, bias=True)
        n, p = Xt.shape
        J = Yb.shape[1]
        F = self.cv_folds
        nC = self.Cs_.size
        Ylab = torch.from_numpy(Yb.astype(np.float32))  # (n, J) in {1, -1, 0}
        kernel = n <= 1.5 * p and n * n * 4 <= _GRAM_MAX_BYTES
        self.kernel_form_ = bool(kernel)
        K = (Xt @ Xt.T)[None] if kernel else None

        def solve(Ycols: torch.Tensor, Cw: torch.Tensor, start: torch.Tensor | None):
            """Returns w-space W (p, q) or kernel beta (n, q), scores (n, q), iterations, converged."""
            if kernel:
                B, f, it, cv_ = _newton_kernel(
                    K, Ycols[None], Cw[None], None if start is None else start[None], tol=self.tol, max_iter=self.max_iter
                )
                return B[0], f[0], it[0], cv_[0]
            return _newton_primal(Xt, Ycols, Cw, start, tol=self.tol, max_iter=self.max_iter)

        C_idx = np.zeros(J, dtype=np.int64)
        start = None
        if nC > 1:
            folds = torch.from_numpy(self._fold_masks(J).astype(np.int64))  # (J, n)
            Ycv = Ylab[:, :, None].expand(n, J, F).reshape(n, J * F)
            T = (folds.T[:, :, None] != torch.arange(F)[None, None, :]).reshape(n, J * F) & (Ycv != 0)
            Ycv = torch.where(Ycv == 0, 1.0, Ycv)
            scorer = self.scoring or _default_ap()
            fold_scores = np.full((J, nC, F), np.nan)
            path = []
            sol = None
            for ci, C in enumerate(self.Cs_):
                Cw = _costs(torch.where(T, Ycv, 0.0), T, torch.tensor(float(C)), self.class_weight)
                sol, f, _, _ = solve(Ycv, Cw, sol)
                path.append(sol.clone())
                f_np = f.numpy()
                for j in range(J):
                    fj = self.fold_ids_[j] if self.fold_ids_.ndim == 2 else self.fold_ids_
                    for k in range(F):
                        col = j * F + k
                        trained = T[:, col]
                        if not bool((Ycv[:, col][trained] > 0).any()) or not bool((Ycv[:, col][trained] < 0).any()):
                            continue
                        val = fj == k
                        fold_scores[j, ci, k] = self._score_fold(f_np[val, col], Yb[val, j], scorer)
                _log.debug("ovr CV C=%g done", C)
            self.cv_scores_, C_idx = self._choose(fold_scores)
            self.cv_fold_scores_ = fold_scores
            # warm start: mean of the fold solutions at the chosen C
            # (for the kernel form too: the mean of the fold betas is the mean of the fold w's)
            start = torch.stack([path[C_idx[j]][:, j * F : (j + 1) * F].mean(dim=1) for j in range(J)], dim=1)
        else:
            self.cv_scores_ = np.full((J, 1), np.nan)
            self.cv_fold_scores_ = np.full((J, 1, 0), np.nan)
        T = Ylab != 0
        Cw = _costs(Ylab, T, torch.from_numpy(self.Cs_[C_idx].astype(np.float32)), self.class_weight)
        Yfull = torch.where(T, Ylab, 1.0)
        sol, f, it, conv = solve(Yfull, Cw, start)
        W = (Xt.T @ sol) if kernel else sol  # (p, J)
        h = (1 - Yfull * f).clamp_min(0)
        obj = 0.5 * (W * W).sum(0) + (Cw * h * h).sum(0)
        self._finish(W.T.numpy(), C_idx, it, conv, obj.double().numpy())

    # ------------------------------------------------------------------------------------------ ovo / torch

    def _pair_layout(self, y_idx: np.ndarray) -> tuple[np.ndarray, int]:
        """``(n_classes, m_c)`` sample indices per class, padded with -1; ``m_c`` = largest class."""
        counts = np.bincount(y_idx, minlength=self.classes_.size)
        m_c = int(counts.max())
        order = np.argsort(y_idx, kind="stable")
        by_class = np.full((self.classes_.size, m_c), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for c in range(self.classes_.size):
            by_class[c, : counts[c]] = order[starts[c] : starts[c] + counts[c]]
        return by_class, m_c

    def _fit_ovo_torch(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        Xt = self._to_torch(X, bias=True)
        n, p = Xt.shape
        self.kernel_form_ = True
        pairs = self.pairs_
        P = pairs.shape[0]
        F = self.cv_folds
        nC = self.Cs_.size
        cv = nC > 1
        scope = self._scope()
        by_class, m_c = self._pair_layout(y_idx)
        blocks = _ClassBlocks(pairs, by_class)
        m = 2 * m_c
        K = Xt @ Xt.T if n * n * 4 <= _GRAM_MAX_BYTES else None
        q_cv = F * nC if cv else 1
        per_pair = 4 * (m * m + 16 * m * q_cv + (0 if K is not None else m * p))
        chunk = max(1, min(P, _CHUNK_BYTES // per_pair))

        def layout(sl: slice) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
            """Sample indices (Pc, m), validity, labels (+1 for a's samples, -1 for b's, 0 padding), Gram."""
            idx = np.concatenate([by_class[pairs[sl, 0]], by_class[pairs[sl, 1]]], axis=1)
            valid = idx >= 0
            idx = np.where(valid, idx, 0)
            y = np.where(np.arange(m)[None, :] < m_c, 1.0, -1.0) * valid
            it = torch.from_numpy(idx)
            if K is not None:
                G = K[it[:, :, None], it[:, None, :]]
            else:
                Xg = Xt[it]
                G = Xg @ Xg.transpose(1, 2)
            return idx, torch.from_numpy(valid), torch.from_numpy(y.astype(np.float32)), G

        C_idx = np.zeros(P, dtype=np.int64)
        avg_beta = None
        if cv:
            folds_np = self.fold_ids_
            fold_scores = np.full((P, nC, F), np.nan)
            avg_beta = torch.zeros(nC, P, m)
            beta_cv = torch.zeros(nC, F, P, m) if scope == "global" else None
            Cs = torch.from_numpy(self.Cs_.astype(np.float32))
            scorer = self.scoring
            for s0 in range(0, P, chunk):
                sl = slice(s0, min(P, s0 + chunk))
                Pc = sl.stop - sl.start
                idx, valid, y, G = layout(sl)
                fo = torch.from_numpy(folds_np[idx].astype(np.int64))  # (Pc, m)
                T = (fo[:, :, None] != torch.arange(F)) & valid[:, :, None]  # (Pc, m, F)
                Ycols = y[:, :, None].expand(Pc, m, F)
                # every C of the grid is another set of columns (column ci * F + k): reading the Gram blocks,
                # not the arithmetic, bounds this solver, so extra columns are nearly free
                Cw = torch.cat([_costs(torch.where(T, Ycols, 0.0), T, C, self.class_weight) for C in Cs], dim=2)
                Yq = torch.where(Ycols == 0, 1.0, Ycols).repeat(1, 1, nC)
                B, f, _, _ = _newton_kernel(G, Yq, Cw, None, tol=self.tol, max_iter=self.max_iter)
                B4 = B.view(Pc, m, nC, F)
                avg_beta[:, sl] = B4.mean(-1).permute(2, 0, 1)  # = the mean of the fold w's
                if beta_cv is not None:
                    beta_cv[:, :, sl] = B4.permute(2, 3, 0, 1)
                    continue
                # per-pair scores on the pair's held-out samples
                trained = (T & (Ycols > 0)).any(1) & (T & (Ycols < 0)).any(1)  # (Pc, F)
                held = (fo[:, :, None] == torch.arange(F)) & valid[:, :, None]  # (Pc, m, F)
                both = (held & (Ycols > 0)).any(1) & (held & (Ycols < 0)).any(1)
                ok = (trained & both).numpy()
                f4 = f.view(Pc, m, nC, F)
                if scorer is None:  # accuracy, vectorised
                    right = ((f4 > 0) == (Ycols > 0)[:, :, None, :]) & held[:, :, None, :]
                    acc = right.sum(1) / held.sum(1)[:, None, :].clamp_min(1)
                    fold_scores[sl] = np.where(ok[:, None, :], acc.numpy(), np.nan)
                else:
                    f_np, y_np, held_np = f4.numpy(), y.numpy(), held.numpy()
                    for i, k in zip(*np.nonzero(ok), strict=True):
                        v = held_np[i, :, k]
                        for ci in range(nC):
                            fold_scores[sl.start + i, ci, k] = float(scorer(f_np[i, v, ci, k], y_np[i, v]))
            if beta_cv is not None:
                # held-out voting: every sample of fold k is classified by all pairs trained without fold k
                for k in range(F):
                    val = np.nonzero(folds_np == k)[0]
                    M = K[:, torch.from_numpy(val)] if K is not None else None
                    for ci in range(nC):
                        if M is not None:
                            dec = blocks.apply(beta_cv[ci, k], M).T  # (n_val, P)
                        else:
                            dec = Xt[torch.from_numpy(val)] @ blocks.apply(beta_cv[ci, k], Xt).T
                        pred = blocks.vote(dec, self.classes_.size)
                        fold_scores[:, ci, k] = float((pred.numpy() == y_idx[val]).mean())
            self.cv_scores_, C_idx = self._choose(fold_scores)
            self.cv_fold_scores_ = fold_scores[:1] if scope == "global" else fold_scores
        else:
            self.cv_scores_ = np.full((1 if scope == "global" else P, 1), np.nan)
            self.cv_fold_scores_ = np.full((1 if scope == "global" else P, 1, 0), np.nan)

        betas = torch.zeros(P, m)
        n_iter = np.zeros(P, dtype=np.int64)
        conv = np.zeros(P, dtype=bool)
        obj = np.zeros(P)
        for s0 in range(0, P, chunk):
            sl = slice(s0, min(P, s0 + chunk))
            idx, valid, y, G = layout(sl)
            Cp = torch.from_numpy(self.Cs_[C_idx[sl]].astype(np.float32))[:, None, None]
            Cw = _costs(y[:, :, None], valid[:, :, None], Cp, self.class_weight)
            start = None
            if avg_beta is not None:
                start = avg_beta[torch.from_numpy(C_idx[sl]), torch.arange(sl.start, sl.stop)][:, :, None]
            Yq = torch.where(y == 0, 1.0, y)[:, :, None]
            B, f, it, cvg = _newton_kernel(G, Yq, Cw, start, tol=self.tol, max_iter=self.max_iter)
            h = (1 - Yq * f).clamp_min(0)
            obj[sl] = (0.5 * (B * f).sum((1, 2)) + (Cw * h * h).sum((1, 2))).double().numpy()
            betas[sl] = B[:, :, 0]
            n_iter[sl], conv[sl] = it[:, 0], cvg[:, 0]
        self._finish(blocks.apply(betas, Xt).numpy(), C_idx, n_iter, conv, obj)

    # ------------------------------------------------------------------------------------------ liblinear

    def _liblinear_one(self, Xd: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, int]:
        """One LinearSVC; returns the w-space weights (d + 1,) (bias weight last, b' = intercept / s)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import LinearSVC

        cw = self.class_weight if self.class_weight is None or self.class_weight == "balanced" else dict(self.class_weight)
        clf = LinearSVC(
            C=float(C),
            loss=self.loss,
            dual=bool(self.loss == "hinge" or Xd.shape[0] < Xd.shape[1]),
            tol=self.tol,
            max_iter=self.max_iter,
            fit_intercept=True,
            intercept_scaling=float(self.intercept_scaling),
            class_weight=cw,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xd, y)
        w = np.empty(Xd.shape[1] + 1)
        sign = 1.0 if clf.classes_[1] == 1 else -1.0  # classes_ sorted: [-1, 1]
        w[:-1] = sign * clf.coef_[0]
        w[-1] = sign * clf.intercept_[0] / float(self.intercept_scaling)
        return w, int(np.max(clf.n_iter_))

    def _run_jobs(self, jobs: list[tuple[np.ndarray, np.ndarray, float]], Xd: np.ndarray) -> list[tuple[np.ndarray, int]]:
        if self.n_jobs in (None, 1) or len(jobs) < 2:
            return [self._liblinear_one(Xd[rows], y, C) for rows, y, C in jobs]
        from joblib import Parallel, delayed

        return Parallel(n_jobs=self.n_jobs)(delayed(self._liblinear_one)(Xd[rows], y, C) for rows, y, C in jobs)

    def _objective(self, Xd: np.ndarray, w: np.ndarray, rows: np.ndarray, y: np.ndarray, C: float) -> float:
        s = float(self.intercept_scaling)
        margin = y * (Xd[rows] @ w[:-1] + s * w[-1])
        cw = _costs(
            torch.from_numpy(y.astype(np.float64))[:, None],
            torch.ones(y.size, 1, dtype=torch.bool),
            torch.tensor(float(C), dtype=torch.float64),
            self.class_weight,
        )[:, 0].numpy()
        h = np.maximum(0.0, 1.0 - margin)
        loss = h * h if self.loss == "squared_hinge" else h
        return float(0.5 * w @ w + (cw * loss).sum())

    def _fit_ovr_liblinear(self, X: np.ndarray, Yb: np.ndarray) -> None:
        self.kernel_form_ = False
        self._check_finite(X)
        Xd = np.ascontiguousarray(X, dtype=np.float64)
        n, d = Xd.shape
        J = Yb.shape[1]
        F = self.cv_folds
        nC = self.Cs_.size
        C_idx = np.zeros(J, dtype=np.int64)
        s = float(self.intercept_scaling)
        if nC > 1:
            folds = self._fold_masks(J)
            scorer = self.scoring or _default_ap()
            jobs, keys = [], []
            for j in range(J):
                for k in range(F):
                    rows = np.nonzero((folds[j] != k) & (Yb[:, j] != 0))[0]
                    y = Yb[rows, j].astype(np.int64)
                    if not (y > 0).any() or not (y < 0).any():
                        continue
                    for ci, C in enumerate(self.Cs_):
                        jobs.append((rows, y, C))
                        keys.append((j, k, ci))
            fold_scores = np.full((J, nC, F), np.nan)
            for (j, k, ci), (w, _) in zip(keys, self._run_jobs(jobs, Xd), strict=True):
                val = folds[j] == k
                dec = Xd[val] @ w[:-1] + s * w[-1]
                fold_scores[j, ci, k] = self._score_fold(dec, Yb[val, j], scorer)
            self.cv_scores_, C_idx = self._choose(fold_scores)
            self.cv_fold_scores_ = fold_scores
        else:
            self.cv_scores_ = np.full((J, 1), np.nan)
            self.cv_fold_scores_ = np.full((J, 1, 0), np.nan)
        jobs = []
        for j in range(J):
            rows = np.nonzero(Yb[:, j] != 0)[0]
            jobs.append((rows, Yb[rows, j].astype(np.int64), self.Cs_[C_idx[j]]))
        res = self._run_jobs(jobs, Xd)
        W = np.stack([w for w, _ in res])
        n_iter = np.array([it for _, it in res])
        obj = [self._objective(Xd, w, rows, y, C) for (rows, y, C), (w, _) in zip(jobs, res, strict=True)]
        self._finish(W, C_idx, n_iter, n_iter < self.max_iter, np.array(obj))

    def _fit_ovo_liblinear(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        self.kernel_form_ = False
        self._check_finite(X)
        Xd = np.ascontiguousarray(X, dtype=np.float64)
        n, d = Xd.shape
        s = float(self.intercept_scaling)
        pairs = self.pairs_
        P = pairs.shape[0]
        F = self.cv_folds
        nC = self.Cs_.size
        scope = self._scope()
        C_idx = np.zeros(P, dtype=np.int64)

        def pair_rows(i: int) -> tuple[np.ndarray, np.ndarray]:
            a, b = pairs[i]
            rows = np.nonzero((y_idx == a) | (y_idx == b))[0]
            return rows, np.where(y_idx[rows] == a, 1, -1)

        if nC > 1:
            folds = self.fold_ids_
            scorer = self.scoring or _binary_accuracy
            fold_scores = np.full((P, nC, F), np.nan)
            Wcv = np.zeros((nC, F, P, d + 1))
            jobs, keys = [], []
            for i in range(P):
                rows, y = pair_rows(i)
                for k in range(F):
                    tr = folds[rows] != k
                    if not (y[tr] > 0).any() or not (y[tr] < 0).any():
                        continue
                    for ci, C in enumerate(self.Cs_):
                        jobs.append((rows[tr], y[tr], C))
                        keys.append((i, k, ci))
            for (i, k, ci), (w, _) in zip(keys, self._run_jobs(jobs, Xd), strict=True):
                Wcv[ci, k, i] = w
                if scope == "problem":
                    rows, y = pair_rows(i)
                    val = folds[rows] == k
                    dec = Xd[rows[val]] @ w[:-1] + s * w[-1]
                    fold_scores[i, ci, k] = self._score_fold(dec, y[val], scorer)
            if scope == "global":
                pa, pb = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
                for ci in range(nC):
                    for k in range(F):
                        val = np.nonzero(folds == k)[0]
                        dec = torch.from_numpy(Xd[val] @ Wcv[ci, k, :, :-1].T + s * Wcv[ci, k, :, -1]).float()
                        votes = torch.zeros(val.size, self.classes_.size)
                        confs = torch.zeros_like(votes)
                        _vote(votes, confs, dec, pa, pb)
                        fold_scores[:, ci, k] = float((_winner(votes, confs).numpy() == y_idx[val]).mean())
            self.cv_scores_, C_idx = self._choose(fold_scores)
            self.cv_fold_scores_ = fold_scores[:1] if scope == "global" else fold_scores
        else:
            self.cv_scores_ = np.full((1 if scope == "global" else P, 1), np.nan)
            self.cv_fold_scores_ = np.full((1 if scope == "global" else P, 1, 0), np.nan)
        jobs = []
        for i in range(P):
            rows, y = pair_rows(i)
            jobs.append((rows, y, self.Cs_[C_idx[i]]))
        res = self._run_jobs(jobs, Xd)
        W = np.stack([w for w, _ in res])
        n_iter = np.array([it for _, it in res])
        obj = [self._objective(Xd, w, rows, y, C) for (rows, y, C), (w, _) in zip(jobs, res, strict=True)]
        self._finish(W, C_idx, n_iter, n_iter < self.max_iter, np.array(obj))

    def _check_finite(self, X: np.ndarray) -> None:
        for i in range(0, X.shape[0], _PREDICT_ROWS):
            block = np.asarray(X[i : i + _PREDICT_ROWS])
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                raise ConfigError(f"X row {i + int(np.argmin(finite))} contains NaN or inf; fix or drop that sample's features")

    # ------------------------------------------------------------------------------------------ predict

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ConfigError("this LinearSVMHead is not fitted yet; call fit(X, Y) or LinearSVMHead.load(path)")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Decision values ``X @ coef_.T + intercept_``.

        Args:
            X: ``(n, d)`` features.

        Returns:
            ``(n, n_problems)`` float32: one column per class (ovr) or per pair ``pairs_[k] = (a, b)`` (ovo;
            positive favours ``a``).
        """
        self._check_fitted()
        X = self._check_features(X, self.n_features_in_)
        W = torch.from_numpy(self.coef_)
        b = torch.from_numpy(self.intercept_)
        out = np.empty((X.shape[0], W.shape[0]), dtype=np.float32)
        for i in range(0, X.shape[0], _PREDICT_ROWS):
            block = torch.from_numpy(np.ascontiguousarray(X[i : i + _PREDICT_ROWS], dtype=np.float32))
            out[i : i + block.shape[0]] = torch.addmm(b, block, W.T).numpy()
        return out

    def predict_from_decision(self, dec: np.ndarray) -> np.ndarray:
        """Predictions from decision values (e.g. summed over the jittered views of each image).

        Args:
            dec: ``(n, n_problems)`` as returned by :meth:`decision_function` (or a sum of such).

        Returns:
            Multiclass: ``(n,)`` labels from ``classes_`` (ovr: argmax, ties → lowest index; ovo: voting,
            ties → larger summed confidence, then lowest index). Multilabel: ``(n, n_classes)`` int8 in
            ``{1, -1}`` (``dec > 0``).
        """
        self._check_fitted()
        dec = np.asarray(dec)
        if dec.ndim != 2 or dec.shape[1] != self.coef_.shape[0]:
            raise ConfigError(
                f"decision values must be (n, {self.coef_.shape[0]}), got shape {dec.shape}; pass decision_function's output"
            )
        if self.multilabel_:
            return np.where(dec > 0, 1, -1).astype(np.int8)
        if self.mode == "ovr":
            return self.classes_[np.argmax(dec, axis=1)]
        pa, pb = torch.from_numpy(self.pairs_[:, 0]), torch.from_numpy(self.pairs_[:, 1])
        out = np.empty(dec.shape[0], dtype=np.int64)
        for i in range(0, dec.shape[0], _PREDICT_ROWS):
            block = torch.from_numpy(np.ascontiguousarray(dec[i : i + _PREDICT_ROWS], dtype=np.float32))
            votes = torch.zeros(block.shape[0], self.classes_.size)
            confs = torch.zeros_like(votes)
            _vote(votes, confs, block, pa, pb)
            out[i : i + block.shape[0]] = _winner(votes, confs).numpy()
        return self.classes_[out]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Labels (multiclass ``(n,)``) or ``{1, -1}`` indicators (multilabel ``(n, n_classes)``) for ``X``."""
        self._check_fitted()
        X = self._check_features(X, self.n_features_in_)
        parts = [self.predict_from_decision(self.decision_function(X[i : i + _PREDICT_ROWS])) for i in range(0, X.shape[0], _PREDICT_ROWS)]
        return np.concatenate(parts, axis=0)

    # ------------------------------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted head to ``path`` (one ``.npz``, no pickle), atomically (temporary file + rename)."""
        self._check_fitted()
        path = Path(path)
        params = self.get_params(deep=False)
        params["C"] = params["C"] if isinstance(params["C"], Real) else [float(c) for c in np.atleast_1d(params["C"])]
        if isinstance(params["class_weight"], dict):
            params["class_weight"] = {str(k): float(v) for k, v in params["class_weight"].items()}
        scoring = params.pop("scoring")
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "params": params,
            "scoring": None if scoring is None else getattr(scoring, "__qualname__", repr(scoring)),
            "attrs": {k: _jsonable(getattr(self, k)) for k in _SCALAR_ATTRS},
            "none": [k for k in _ARRAY_ATTRS if getattr(self, k, None) is None],
        }
        arrays = {k: np.asarray(getattr(self, k)) for k in _ARRAY_ATTRS if getattr(self, k, None) is not None}
        arrays["__meta__"] = np.array(json.dumps(meta))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearSVMHead:
        """Read a head written by :meth:`save` (``allow_pickle=False``); ``scoring`` comes back as None."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                arrays = {k: z[k] for k in z.files if k != "__meta__"}
        except (OSError, KeyError, ValueError) as err:
            raise ConfigError(f"{path}: not a LinearSVMHead file ({err}); write one with LinearSVMHead.save") from None
        if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
            raise ConfigError(f"{path}: format {meta.get('format')!r} v{meta.get('version')} is not {_FORMAT} v{_FORMAT_VERSION}")
        params = dict(meta["params"])
        if isinstance(params.get("class_weight"), dict):
            params["class_weight"] = {int(k): v for k, v in params["class_weight"].items()}
        if isinstance(params.get("C"), list):
            params["C"] = tuple(params["C"])
        head = cls(**params)
        for k, v in arrays.items():
            setattr(head, k, v)
        for k in meta["none"]:
            setattr(head, k, None)
        for k, v in meta["attrs"].items():
            setattr(head, k, v)
        return head


# ============================================================================================ helpers


def _vote(votes: torch.Tensor, confs: torch.Tensor, dec: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor) -> None:
    """Add one-vs-one votes and confidences of decision values ``dec (n, Pc)`` for pairs ``(pa, pb)``."""
    win_a = (dec > 0).to(votes.dtype)
    votes.index_add_(1, pa, win_a)
    votes.index_add_(1, pb, 1 - win_a)
    confs.index_add_(1, pa, dec.to(confs.dtype))
    confs.index_add_(1, pb, -dec.to(confs.dtype))


def _winner(votes: torch.Tensor, confs: torch.Tensor) -> torch.Tensor:
    """Most votes; ties → larger summed confidence; then lowest index (argmax returns the first maximum)."""
    top = votes == votes.max(dim=1, keepdim=True).values
    conf = torch.where(top, confs, -math.inf)
    best = conf.max(dim=1, keepdim=True).values
    return torch.argmax((top & (conf == best)).to(torch.int32), dim=1)


class _ClassBlocks:
    """One-vs-one bookkeeping: pair ``k = (a, b)`` owns the samples of class ``a`` then those of class ``b``.

    A kernel-form pair solution ``beta (P, 2 * m_c)`` (first half on ``by_class[a]``, second on
    ``by_class[b]``, zero on padding) is mapped through any row-indexed matrix ``M (n, r)`` with one small
    dense GEMM per class and half (``out[k] = beta[k, :m_c] @ M[rows_a] + beta[k, m_c:] @ M[rows_b]``):
    ``M = X`` gives the weight vectors, ``M = K[:, val]`` the decision values on ``val``.
    """

    def __init__(self, pairs: np.ndarray, by_class: np.ndarray) -> None:
        self.pairs = pairs
        self.by_class = by_class
        self.m_c = by_class.shape[1]
        self.first = [torch.from_numpy(np.nonzero(pairs[:, 0] == c)[0]) for c in range(by_class.shape[0])]
        self.second = [torch.from_numpy(np.nonzero(pairs[:, 1] == c)[0]) for c in range(by_class.shape[0])]
        self.pa = torch.from_numpy(pairs[:, 0])
        self.pb = torch.from_numpy(pairs[:, 1])

    def apply(self, beta: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(beta.shape[0], M.shape[1], dtype=M.dtype)
        for c in range(self.by_class.shape[0]):
            rows = self.by_class[c]
            cnt = int((rows >= 0).sum())
            Mc = M[torch.from_numpy(rows[:cnt])]
            if self.first[c].numel():
                out.index_add_(0, self.first[c], beta[self.first[c], :cnt] @ Mc)
            if self.second[c].numel():
                out.index_add_(0, self.second[c], beta[self.second[c], self.m_c : self.m_c + cnt] @ Mc)
        return out

    def vote(self, dec: torch.Tensor, n_classes: int) -> torch.Tensor:
        votes = torch.zeros(dec.shape[0], n_classes)
        confs = torch.zeros_like(votes)
        _vote(votes, confs, dec, self.pa, self.pb)
        return _winner(votes, confs)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
