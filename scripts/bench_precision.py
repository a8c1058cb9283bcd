#!/usr/bin/env python
"""Does the fast path change the numbers? fp32 against bf16 features of the same images, for networks whose bf16
fidelity ranges from excellent to poor: the probe's figures (what ``--precision auto`` decides on), and the change in
a linear SVM's test scores and in a retrieval mAP. This is the evidence behind ``PROBE_THRESHOLDS``.

    python scripts/bench_precision.py                                  # generated labelled set, ResNet-50 variants
    python scripts/bench_precision.py --model alexnet --bn-mix 0
    python scripts/bench_precision.py --images ../shared/data/hymenoptera_data --bn-mix 0,1
    python scripts/bench_precision.py --model alexnet --test-per-class 1000     # Δ accuracy below one image's worth

Results and the reading of them: docs/PRECISION.md. Features of the generated set are cached under
$TMPDIR/cnnbase-bench-precision-cache (delete it to recompute them).

Variants: ``--bn-mix a`` sets every batch-norm layer's statistics to ``a × (statistics measured on the train images)
+ (1 − a) × (the random-init statistics: mean 0, variance 1)``. a = 0 is the random-weights network whose bf16
features hold; a = 1 is the calibrated network of PERF.md whose bf16 features lose two thirds of their top-1
neighbours; values between give the range in between. Networks without batch norm (AlexNet, VGG) have one variant.

Default data: 9 classes of oriented stripes (0°, 20°, …, 160°; random period, phase, colours, noise), 60 train and
140 test images per class, 320×240 JPEGs: neighbouring orientations are confusable, so SVM and retrieval scores sit
in the 50–90% range where a changed feature shows. The SVM is one-vs-rest LinearSVC at C = 1 on L2-normalised
features (the same C, seed and a tight tolerance for both precisions, so only the features differ); retrieval: every test image queries the
train images, relevant = same class, mAP = mean of non-interpolated AP.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def oriented(angle: float, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(8, 24)
    phase = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.deg2rad(angle + rng.normal(0, 4))
    m = np.sin(2 * np.pi * (xx * np.cos(t) + yy * np.sin(t)) / period + phase)
    a = rng.uniform(0, 255, size=3)
    img = a * (m[..., None] > 0) + (255 - a) * (m[..., None] <= 0) + rng.normal(0, 40, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(root: Path, train: int = 60, test: int = 140, seed: int = 0) -> Path:
    from PIL import Image

    marker = root / f".done-{train}-{test}-{seed}"
    if marker.exists():
        return root
    rng = np.random.default_rng(seed)
    for c in range(9):
        for split, n in (("train", train), ("test", test)):
            d = root / split / f"deg{20 * c:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(oriented(20 * c, 320, 240, rng)).save(d / f"{i:04d}.jpg", quality=90)
    marker.touch()
    return root


def mix_bn(model: torch.nn.Module, stats: dict[str, tuple[torch.Tensor, torch.Tensor]], a: float) -> None:
    for name, m in model.named_modules():
        if name in stats:
            mean, var = stats[name]
            m.running_mean.copy_(a * mean)
            m.running_var.copy_(a * var + (1 - a))


def measure_bn(model: torch.nn.Module, x: torch.Tensor, preprocess) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[no-untyped-def]
    """Batch-norm statistics of ``model`` on the uint8 images ``x`` (cumulative average over batches of 32)."""
    from cnnbase.features.views import normalize_batch

    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    if not bns:
        return {}
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for s in range(0, len(x), 32):
            model(normalize_batch(x[s:s + 32], preprocess, torch.float32))
    model.eval()
    return {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}


def scores(tr: np.ndarray, ytr: np.ndarray, te: np.ndarray, yte: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """(SVM accuracy, SVM mean AP over classes, retrieval mAP) in points, and the SVM decision scores."""
    from sklearn.metrics import average_precision_score
    from sklearn.svm import LinearSVC

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    tr, te = unit(tr.astype(np.float64)), unit(te.astype(np.float64))
    classes = np.unique(ytr)
    svm = dict(C=1.0, tol=1e-6, max_iter=100000, random_state=0)  # deterministic and converged: only the features differ
    dec = np.stack([LinearSVC(**svm).fit(tr, ytr == c).decision_function(te) for c in classes], 1)
    acc = float(np.mean(classes[dec.argmax(1)] == yte))
    svm_map = float(np.mean([average_precision_score(yte == c, dec[:, i]) for i, c in enumerate(classes)]))
    sim = te @ tr.T
    ret = float(np.mean([average_precision_score(ytr == yte[q], sim[q]) for q in range(len(te))]))
    return 100 * acc, 100 * svm_map, 100 * ret, dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="labelled folder root/{train,test|val}/<class>/* (default: generated)")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--bn-mix", default="0,0.3,1", help="comma-separated batch-norm calibration mixes (see above)")
    ap.add_argument("--compiled", action="store_true",
                    help="also the compiled bf16 model (what a long run uses; the probe itself runs the eager one)")
    ap.add_argument("--train-per-class", type=int, default=60, help="generated set: train images per class")
    ap.add_argument("--test-per-class", type=int, default=140,
                    help="generated set: test images per class (one test image is 100/(9 × this) accuracy points: "
                         "raise it to resolve changes below a few tenths of a point)")
    args = ap.parse_args()

    from cnnbase.backbones import load_backbone
    from cnnbase.datasets import open_dataset
    from cnnbase.features.extract import (
        PROBE_THRESHOLDS,
        ModelRunner,
        _ViewsDataset,
        fidelity,
        passes,
        probe_sample,
    )
    from cnnbase.features.views import JitterSpec

    sizes = (args.train_per_class, args.test_per_class)
    name = "cnnbase-bench-precision" + ("" if sizes == (60, 140) else "-{}-{}".format(*sizes))
    root = args.images or generate(Path(tempfile.gettempdir()) / name, *sizes)
    ds = open_dataset(str(root))
    test = "test" if "test" in ds.splits else "val"
    bb = load_backbone(args.model, "random")
    layer = args.layer or bb.spec.default_layer
    node = bb.resolve_layer(layer).node
    dset = {sp: _ViewsDataset(ds.samples(sp), bb.preprocess, JitterSpec.parse("none")) for sp in ("train", test)}
    x = {sp: torch.cat([d[i][1] for i in range(len(d))]) for sp, d in dset.items()}
    y = {sp: np.asarray(ds.labels[sp]) for sp in ("train", test)}
    stats = measure_bn(bb.model, x["train"], bb.preprocess)
    mixes = [float(v) for v in args.bn_mix.split(",")] if stats else [0.0]
    probe_idx = probe_sample(len(x[test]))
    print(f"{args.model} {layer}, random weights; {len(x['train'])} train / {len(x[test])} test images from {root}")
    print(f"probe: {len(probe_idx)} evenly spread test images (as `--precision auto` picks them); thresholds {PROBE_THRESHOLDS}")
    fast = ["bf16"] + (["bf16-compiled"] if args.compiled else [])
    head = (f"{'bn mix':>6} {'path':>13} | {'probe: min cos':>14} {'rel err':>8} {'10-NN':>6} {'top-1':>6} {'verdict':>7} | "
            f"{'all: 10-NN':>10} {'top-1':>6} | {'SVM acc fp32':>12} {'Δ':>6} | {'SVM mAP fp32':>12} {'Δ':>6} | "
            f"{'ret mAP fp32':>12} {'Δ':>6}")
    print(head)
    print("-" * len(head))
    for a in mixes:
        if stats:
            mix_bn(bb.model, stats, a)
        feats = {}
        t = time.perf_counter()
        for prec in ["fp32", *fast]:
            cache = Path(tempfile.gettempdir()) / "cnnbase-bench-precision-cache" / f"{args.model}-{layer}-{root.name}-{a}-{prec}.npz"
            if cache.is_file() and not args.images:
                feats[prec] = dict(np.load(cache))
                continue
            r = ModelRunner(bb, {layer: node}, precision=prec.split("-")[0], compile=prec.endswith("-compiled"))
            pad = 32 if r.compiled else None  # as the pipeline does: one compiled shape
            feats[prec] = {sp: np.concatenate([r(v[s:s + 32], pad_to=pad)[layer] for s in range(0, len(v), 32)]) for sp, v in x.items()}
            if not args.images:
                cache.parent.mkdir(exist_ok=True)
                np.savez(cache, **feats[prec])
        s32 = scores(feats["fp32"]["train"], y["train"], feats["fp32"][test], y[test])
        for prec in fast:
            probe = fidelity(feats["fp32"][test][probe_idx], feats[prec][test][probe_idx])
            full = fidelity(feats["fp32"][test], feats[prec][test])
            s16 = scores(feats[prec]["train"], y["train"], feats[prec][test], y[test])
            d = [b - a_ for a_, b in zip(s32[:3], s16[:3])]
            changed = s32[3].argmax(1) != s16[3].argmax(1)
            top2 = np.sort(s32[3], 1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]  # fp32 score gap between the two best classes
            flips = (f"{int(changed.sum())} decisions changed (fp32 margin ≤ {margin[changed].max():.4f}; median margin "
                     f"{np.median(margin):.4f})" if changed.any() else "no decision changed")
            print(f"{a:6.2f} {prec:>13} | {probe['min_cosine']:14.5f} {100 * probe['median_rel_error']:7.2f}% {probe['knn10_overlap']:6.3f} "
                  f"{probe['top1_agreement']:6.3f} {'pass' if passes(probe) else 'fail':>7} | {full['knn10_overlap']:10.3f} "
                  f"{full['top1_agreement']:6.3f} | {s32[0]:12.2f} {d[0]:+6.2f} | {s32[1]:12.2f} {d[1]:+6.2f} | "
                  f"{s32[2]:12.2f} {d[2]:+6.2f}   ({time.perf_counter() - t:.0f} s)\n{'':23}SVM: {flips}", flush=True)
    print("target: |Δ| ≤ 0.2 points wherever the probe passes")


if __name__ == "__main__":
    main()
