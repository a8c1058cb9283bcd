#!/usr/bin/env python
"""The fast path's preprocessing: Resize + CenterCrop computed on the crop region only (``Preprocess.region_resize``)
against torchvision's two-step transform, on the same images, in one process.

Prints the per-image time of decode alone, decode + exact preprocessing and decode + region preprocessing (medians of
interleaved repeats, one core), the speed-up, and the fidelity: pixels that differ, and fp32 features of both inputs
compared with the probe's figures.

    python scripts/bench_region_resize.py --images ../shared/data/hymenoptera_data
    python scripts/bench_region_resize.py --images /tmp/cnnbase-bench-5000 --model resnet50 --limit 150
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    ap.add_argument("--model", default="alexnet")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from cnnbase.backbones import load_backbone
    from cnnbase.features.extract import ModelRunner, fidelity
    from cnnbase.features.views import preprocess_pil
    from cnnbase.images import load_rgb

    torch.set_num_threads(1)
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit]
    bb = load_backbone(args.model, "random")
    exact = bb.preprocess
    region = replace(exact, region_resize=True)
    times: dict[str, list[float]] = {"decode": [], "exact": [], "region": []}
    timed = paths[:150]
    for _ in range(args.repeats):
        for name, fn in (("decode", lambda q: load_rgb(q)), ("exact", lambda q: preprocess_pil(load_rgb(q), exact)),
                         ("region", lambda q: preprocess_pil(load_rgb(q), region))):
            t = time.perf_counter()
            for q in timed:
                fn(q)
            times[name].append(1000 * (time.perf_counter() - t) / len(timed))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(timed)} images from {args.images}, one core, median of {args.repeats}: decode {med['decode']:.2f} ms, "
          f"decode+exact {med['exact']:.2f} ms, decode+region {med['region']:.2f} ms: {med['exact'] / med['region']:.2f}x")

    xa = torch.stack([preprocess_pil(load_rgb(q), exact) for q in paths])
    xb = torch.stack([preprocess_pil(load_rgb(q), region) for q in paths])
    diff = (xa.int() - xb.int()).abs()
    print(f"{len(paths)} images: {100 * float((diff > 0).float().mean()):.2f}% of pixels differ, by at most {int(diff.max())}/255")
    layer = bb.spec.default_layer
    runner = ModelRunner(bb, {layer: bb.resolve_layer(layer).node}, precision="fp32")
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    fa = np.concatenate([runner(xa[s:s + 32])[layer] for s in range(0, len(xa), 32)])
    fb = np.concatenate([runner(xb[s:s + 32])[layer] for s in range(0, len(xb), 32)])
    fig = fidelity(fa, fb)
    print(f"{args.model} {layer} fp32 features, region vs exact: min cosine {fig['min_cosine']:.6f}, median relative error "
          f"{100 * fig['median_rel_error']:.3f}%, 10-NN {fig['knn10_overlap']:.3f}, top-1 {fig['top1_agreement']:.3f}")


if __name__ == "__main__":
    main()
