#!/usr/bin/env python
"""Does the fast path change the numbers? fp32 against bf16 features on the same images: the probe's figures, a
linear SVM's test score and a retrieval mAP, side by side (the gate behind ``--precision auto``).

    python scripts/bench_precision.py --images ../shared/data/hymenoptera_data --model alexnet
    python scripts/bench_precision.py --images ../shared/data/hymenoptera_data --model resnet50

The folder needs train/test (or train/val) class folders. Random weights unless --weights is given.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--model", default="alexnet")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--weights", default="random")
    args = ap.parse_args()

    from cnnbase.datasets import open_dataset
    from cnnbase.features.extract import PROBE_THRESHOLDS, fidelity, passes
    from cnnbase.features.store import FeatureStore
    from cnnbase.runner import Context, FeatureOptions, SVMOptions, evaluate, load_features

    ds = open_dataset(str(args.images))
    test = "test" if "test" in ds.splits else "val"
    train = "train"
    ctx = Context(store=FeatureStore(Path(tempfile.mkdtemp()) / "store"), progress=False,
                  results=Path(tempfile.mkdtemp()) / "r.jsonl")
    base = FeatureOptions(weights=args.weights, on_bad_image="skip", compile=False)
    rows = {}
    feats = {}
    for prec in ("fp32", "bf16"):
        o = replace(base, precision=prec)
        svm = evaluate(args.model, ds, layer=args.layer, train_split=train, test_split=test, opts=o, ctx=ctx,
                       svm=SVMOptions(solver="liblinear"))
        ret = evaluate(args.model, ds, task="retrieval", layer=args.layer, train_split=train, test_split=test, opts=o, ctx=ctx)
        rows[prec] = (svm["value"], ret["value"])
        f = load_features(args.model, ds, split=test, layer=args.layer, opts=o, ctx=ctx)
        feats[prec] = np.asarray(f.array)[f.valid]
    fig = fidelity(feats["fp32"], feats["bf16"])
    print(f"{args.model} {args.layer or 'default layer'}, {args.weights} weights, {len(feats['fp32'])} test images")
    print("fidelity bf16 vs fp32 on all test images: " + ", ".join(f"{k} {v:.4f}" for k, v in fig.items() if k != "images"))
    print(f"probe verdict with thresholds {PROBE_THRESHOLDS}: {'pass' if passes(fig) else 'fail'}")
    print(f"{'':6}{'SVM accuracy':>14}{'retrieval mAP':>15}")
    for prec, (a, m) in rows.items():
        print(f"{prec:6}{100 * a:14.2f}{100 * m:15.2f}")
    da, dm = (100 * (rows["bf16"][i] - rows["fp32"][i]) for i in (0, 1))
    print(f"{'Δ':6}{da:+14.2f}{dm:+15.2f}   (target: |Δ| ≤ 0.2 points where the probe passes)")


if __name__ == "__main__":
    main()
