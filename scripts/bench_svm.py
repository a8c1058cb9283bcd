"""Benchmark: cnnbase's batched linear-SVM head against a VISSL-style LinearSVC loop, on generated features.

Two shapes (PERF.md, "Linear SVM"):

* **VOC07-like**: 5,011 train / 4,952 test x 4,096-d, 20 binary one-vs-rest problems, multilabel with
  difficult (label 0) positives; metric VOC2007 11-point mAP (difficult excluded at test time).
* **CUB-like**: 5,994 train / 5,794 test x 4,096-d, 200 classes (about 30 per class); one-vs-rest with
  argmax; metrics top-1 accuracy and mean per-class accuracy. ``--ovo`` also times the one-vs-one head
  (Razavian's protocol for CUB: 19,900 pairs, one global C by held-out voting accuracy).

Features imitate L2-normalised ReLU CNN features: non-negative, unit norm, a dominant mean direction, a
power-law spectrum, class structure in a latent space (CUB-like: species grouped in families), and enough
noise that classes overlap (test scores in the 50-90% range).

**Baseline** (VISSL/FAIR ``train_svm_kfold.py`` style): for each class, one after another, for each C, for each
of 3 folds, one ``sklearn.svm.LinearSVC`` (squared hinge, ``class_weight={1: 2, -1: 1}``, ``dual`` when the
training set has fewer samples than features, ``tol=1e-4``, ``max_iter=2000``); the C with the best mean
held-out VOC07 AP wins and the class is refitted on all training data. It uses the same folds
(:func:`cnnbase.heads.svm.cv_fold_ids`) and CV score as ours, so both pick C the same way. With
``--baseline-classes N`` only the first N classes are trained and the total time is **extrapolated** (x
classes / N); test scores are then compared on those N classes.

**Ours**: ``LinearSVMHead(solver="auto")`` with the same grid, folds, class weights and CV score.

Usage::

    python scripts/bench_svm.py --quick                 # seconds: small shapes, full baseline
    python scripts/bench_svm.py --baseline-classes 2    # full shapes, baseline extrapolated from 2 classes
    python scripts/bench_svm.py --shape cub --ovo       # CUB-like only, plus the one-vs-one head
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnbase.heads.svm import LinearSVMHead, cv_fold_ids  # noqa: E402

try:
    from cnnbase.metrics import mean_class_accuracy, voc07_ap  # noqa: E402
except ImportError:  # pragma: no cover - metrics package unavailable
    from cnnbase.heads.svm import _voc07_ap_fallback as voc07_ap  # noqa: E402

    def mean_class_accuracy(y_true, y_pred, n_classes=None):  # type: ignore[no-redef]
        return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


CLASS_WEIGHT = {1: 2.0, -1: 1.0}
GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


# ============================================================================================ data


class _Space:
    """Latent space -> feature space map shared by the train and test draws of one dataset."""

    def __init__(self, rng: np.random.Generator, d: int, latent: int = 256) -> None:
        self.rng = rng
        self.d = d
        self.latent = latent
        self.scale = (1.0 + np.arange(latent)) ** -0.5  # power-law spectrum
        self.proj = (rng.standard_normal((latent, d)) / np.sqrt(latent)).astype(np.float32)
        self.bias = (0.25 * rng.standard_normal(d) - 0.1).astype(np.float32)

    def features(self, codes: np.ndarray, noise: float = 0.6) -> np.ndarray:
        n = codes.shape[0]
        h = (codes * self.scale).astype(np.float32) @ self.proj
        h += self.bias
        h += noise * self.rng.standard_normal((n, self.d), dtype=np.float32)
        np.maximum(h, 0.0, out=h)
        h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        return h


def make_voc_like(n_train: int, n_test: int, d: int, n_classes: int, seed: int, strength: float = 0.6):
    """Multilabel {1, -1, 0} targets, skewed class frequencies (one 'person'-like class), ~1.4 labels/image."""
    rng = np.random.default_rng(seed)
    space = _Space(rng, d)
    protos = rng.standard_normal((n_classes, space.latent))
    freq = rng.dirichlet(np.full(n_classes, 3.0))
    freq[0] += 0.4
    freq /= freq.sum()

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        Y = -np.ones((n, n_classes), np.int8)
        Y[np.arange(n), rng.choice(n_classes, n, p=freq)] = 1
        extra = np.nonzero(rng.random(n) < 0.35)[0]
        Y[extra, rng.choice(n_classes, extra.size, p=freq)] = 1
        pos = Y > 0
        difficult = pos & (rng.random(Y.shape) < 0.06)  # small / occluded objects: weaker signal, label 0
        weight = np.where(difficult, 0.4, 1.0) * pos
        codes = strength * (weight @ protos) / np.sqrt(pos.sum(1, keepdims=True)) + rng.standard_normal(
            (n, space.latent)
        )
        Y[difficult] = 0
        return space.features(codes), Y

    return (*draw(n_train), *draw(n_test))


def make_cub_like(n_train: int, n_test: int, d: int, n_classes: int, seed: int, strength: float = 0.9):
    """Fine-grained classes: species prototypes = family prototype + a smaller species offset."""
    rng = np.random.default_rng(seed)
    space = _Space(rng, d)
    n_fam = max(1, n_classes // 5)
    fam = rng.standard_normal((n_fam, space.latent))
    protos = fam[np.arange(n_classes) % n_fam] + 0.8 * rng.standard_normal((n_classes, space.latent))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % n_classes
        rng.shuffle(y)
        codes = strength * protos[y] / np.sqrt(2) + rng.standard_normal((n, space.latent))
        return space.features(codes), y

    return (*draw(n_train), *draw(n_test))


# ============================================================================================ baseline


def vissl_baseline(X: np.ndarray, Y: np.ndarray, n_classes: int, grid, folds: int, seed: int):
    """One LinearSVC per class, per C and per fold, for the first ``n_classes`` classes one after another.

    Returns (coef, intercept, chosen C) of those classes.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    Xd = np.ascontiguousarray(X, dtype=np.float64)
    fold = cv_fold_ids(Y, folds, seed=seed)  # the head's folds (one assignment for all classes)
    coefs, icpts, chosen = [], [], []
    for j in range(n_classes):
        y = np.where(Y[:, j] > 0, 1, -1)  # difficult (0) as negative in training (VISSL/FAIR)
        scores = []
        for C in grid:
            per_fold = []
            for k in range(folds):
                tr, va = fold != k, fold == k
                clf = LinearSVC(
                    C=C, class_weight=CLASS_WEIGHT, dual=bool(tr.sum() < X.shape[1]), tol=1e-4, max_iter=2000
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf.fit(Xd[tr], y[tr])
                per_fold.append(voc07_ap(clf.decision_function(Xd[va]), y[va]))
            scores.append(np.nanmean(per_fold))
        C = grid[int(np.nanargmax(scores))]
        clf = LinearSVC(
            C=C, class_weight=CLASS_WEIGHT, dual=bool(X.shape[0] < X.shape[1]), tol=1e-4, max_iter=2000
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xd, y)
        coefs.append(clf.coef_[0])
        icpts.append(clf.intercept_[0])
        chosen.append(C)
    return np.array(coefs), np.array(icpts), np.array(chosen)


# ============================================================================================ runs


def _mean_ap(scores: np.ndarray, Y: np.ndarray) -> float:
    return float(np.nanmean([voc07_ap(scores[:, j], Y[:, j]) for j in range(scores.shape[1])]))


def _line(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:<44s} {seconds:9.2f} s  {note}")


def bench_shape(args: argparse.Namespace, shape: str) -> None:
    # class-signal strengths that put test scores in a realistic range (full VOC-like: ~74 mAP at C=1)
    if shape == "voc":
        n_tr, n_te, d, k = (600, 600, 512, 20) if args.quick else (5011, 4952, 4096, 20)
        t0 = time.perf_counter()
        X, Y, Xt, Yt = make_voc_like(
            n_tr, n_te, d, k, args.seed, strength=args.strength or (1.4 if args.quick else 0.6)
        )
        Ytrain = Y
    else:
        n_tr, n_te, d, k = (600, 600, 512, 20) if args.quick else (5994, 5794, 4096, 200)
        t0 = time.perf_counter()
        X, y, Xt, yt = make_cub_like(
            n_tr, n_te, d, k, args.seed, strength=args.strength or (1.2 if args.quick else 0.9)
        )
        Ytrain = np.where(y[:, None] == np.arange(k), 1, -1).astype(np.int8)
        Yt = np.where(yt[:, None] == np.arange(k), 1, -1).astype(np.int8)
    gen_s = time.perf_counter() - t0
    nb = k if args.baseline_classes is None else min(k, args.baseline_classes)
    print(
        f"\n{shape.upper()}-like: {n_tr} train / {n_te} test x {d}-d, {k} classes; C grid {list(args.grid)}, "
        f"{args.folds}-fold CV; torch threads {torch.get_num_threads()}; data generated in {gen_s:.1f} s"
    )

    t0 = time.perf_counter()
    ours = LinearSVMHead(
        mode="ovr", C=args.grid, cv_folds=args.folds, class_weight=CLASS_WEIGHT, solver="auto", seed=args.seed
    ).fit(X, Ytrain)
    ours_s = time.perf_counter() - t0
    dec = ours.decision_function(Xt)

    t0 = time.perf_counter()
    coef, icpt, c_base = vissl_baseline(X, Ytrain, nb, list(args.grid), args.folds, args.seed)
    base_s = time.perf_counter() - t0
    base_total = base_s * k / nb
    dec_b = Xt @ coef.T + icpt

    form = "kernel" if ours.kernel_form_ else "w-space"
    _line(
        f"ours  LinearSVMHead(solver='auto': {ours.solver_}, {form})",
        ours_s,
        f"C_ {np.round(ours.C_[:6], 3).tolist()}...",
    )
    note = f"(measured {base_s:.1f} s on {nb} classes, extrapolated x{k}/{nb})" if nb < k else ""
    _line("baseline  LinearSVC per class/C/fold (VISSL)", base_total, note)
    print(f"  speed-up: {base_total / ours_s:.1f}x" + (" (baseline extrapolated)" if nb < k else ""))
    same_c = float(np.mean(ours.C_[:nb] == c_base))
    corr = min(np.corrcoef(dec[:, j], dec_b[:, j])[0, 1] for j in range(nb))
    print(
        f"  same C chosen on {100 * same_c:.0f}% of the {nb} baseline classes; min test-score correlation {corr:.6f}"
    )
    if shape == "voc":
        print(
            f"  test VOC07 11-pt mAP, first {nb} classes: ours {100 * _mean_ap(dec[:, :nb], Yt[:, :nb]):.2f}  "
            f"baseline {100 * _mean_ap(dec_b, Yt[:, :nb]):.2f}"
        )
        if nb < k:
            print(f"  test VOC07 11-pt mAP, all {k} classes (ours): {100 * _mean_ap(dec, Yt):.2f}")
    else:
        pred = dec.argmax(1)
        print(
            f"  test mean AP over the first {nb} classes: ours {100 * _mean_ap(dec[:, :nb], Yt[:, :nb]):.2f}  "
            f"baseline {100 * _mean_ap(dec_b, Yt[:, :nb]):.2f}"
        )
        acc, mca = float(np.mean(pred == yt)), mean_class_accuracy(yt, pred, k)
        if nb == k:
            pb = dec_b.argmax(1)
            print(
                f"  test accuracy: ours {100 * acc:.2f}  baseline {100 * np.mean(pb == yt):.2f};  "
                f"mean per-class accuracy: ours {100 * mca:.2f}  baseline {100 * mean_class_accuracy(yt, pb, k):.2f}"
            )
        else:
            print(
                f"  test accuracy (ours, all {k} classes): {100 * acc:.2f}; mean per-class accuracy {100 * mca:.2f} "
                "(the partial baseline has no multiclass accuracy)"
            )
        if args.ovo:
            t0 = time.perf_counter()
            ovo = LinearSVMHead(
                mode="ovo", C=args.grid, cv_folds=args.folds, solver="auto", seed=args.seed
            ).fit(X, y)
            ovo_s = time.perf_counter() - t0
            po = ovo.predict(Xt)
            _line(
                f"ours  one-vs-one, {ovo.pairs_.shape[0]} pairs, global C={ovo.C_[0]:g}",
                ovo_s,
                f"accuracy {100 * np.mean(po == yt):.2f}, mean per-class {100 * mean_class_accuracy(yt, po, k):.2f}",
            )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="small shapes (600 x 512, 20 classes): a few seconds"
    )
    ap.add_argument("--shape", choices=["voc", "cub", "both"], default="both")
    ap.add_argument(
        "--baseline-classes",
        type=int,
        default=None,
        metavar="N",
        help="train the baseline on the first N classes only and extrapolate its time",
    )
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="C grid (default: %(default)s)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--ovo", action="store_true", help="CUB-like: also time the one-vs-one head")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument(
        "--strength", type=float, default=None, help="class-signal strength of the generated data"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.grid = tuple(args.grid)
    if args.threads:
        torch.set_num_threads(args.threads)
    for shape in ["voc", "cub"] if args.shape == "both" else [args.shape]:
        bench_shape(args, shape)


if __name__ == "__main__":
    main()
