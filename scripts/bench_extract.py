#!/usr/bin/env python
"""Extraction speed: cnnbase end to end against a plain torchvision loop, in one process, on the same images.

Prints images/s for
  (a) a plain loop: ImageFolder + standard transforms, DataLoader without workers, fp32 model, features stacked;
  (b) cnnbase's extraction end to end (building the model, probe, CPU plan, decoding, store writes);
  (c) the model alone on pre-loaded tensors, in cnnbase's precision/compile settings;
  (d) decode + preprocess (normalisation included, as cnnbase's decoding does it) alone, on all cores;
  (e) the model's FLOPs per image and the fastest dense kernels' GFLOP/s in the same precision: the most any
      extraction could reach on this CPU;
and the ratios b/a and b/L with L = 1 / (1/c + 1/d), the limit when decoding and the model share the cores.
On a shared machine whose speed drifts, ``--rounds N`` alternates (a) and (b) N times (each (b) in a fresh store, so
the probe and the CPU plan run every time; torch.compile's own disk cache may shorten later compiles) and prints each
round and the medians.

    python scripts/bench_extract.py --images ../shared/data/hymenoptera_data --model alexnet
    python scripts/bench_extract.py --model resnet50 --generate 5000      # 5,000 generated 500×375 JPEGs
    python scripts/bench_extract.py --images ../shared/data/hymenoptera_data --model alexnet --plain-limit 398 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch


def generate(root: Path, n: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    marker = root / f".n{n}"
    if marker.exists():
        return root
    for i in range(n):
        d = root / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        # smooth random fields compress like photos (pure noise would make decoding unrealistically slow)
        small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(d / f"{i:05d}.jpg", quality=90)
    marker.touch()
    return root


def plain_loop(paths: list[Path], model_name: str, node: str, batch: int) -> float:
    """(a): the loop most people write."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms
    from torchvision.models.feature_extraction import create_feature_extractor

    from cnnbase.backbones import load_backbone

    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class Files(Dataset):  # torchvision.datasets.ImageFolder's loader and transform, over our file list
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            with open(paths[i], "rb") as f:
                return tf(Image.open(f).convert("RGB")), 0

    model = create_feature_extractor(load_backbone(model_name, "random").model, {node: "f"}).eval()
    t = time.perf_counter()
    out = []
    with torch.no_grad():
        for x, _ in DataLoader(Files(), batch_size=batch, num_workers=0):
            out.append(model(x)["f"].flatten(1))
    torch.cat(out)
    return len(paths) / (time.perf_counter() - t)


def model_gflop(model: torch.nn.Module, node: str, crop: int) -> float:
    """GFLOP (multiply and add counted apart) of one image through ``model`` up to ``node``, at ``crop``×``crop``."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models.feature_extraction import create_feature_extractor

    fx = create_feature_extractor(model, {node: "f"}).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fx(torch.zeros(1, 3, crop, crop))
    return counter.get_total_flops() / 1e9


def kernel_peak(precision: str, repeats: int) -> float:
    """GFLOP/s of the fastest dense kernels this CPU runs in ``precision`` on all its threads: a 1×1 convolution
    (channels_last, oneDNN, as in a ResNet bottleneck) and a square matrix product; the best of each's median."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    conv = torch.nn.Conv2d(1024, 1024, 1, bias=False).to(dtype).to(memory_format=torch.channels_last).eval()
    x = torch.randn(16, 1024, 28, 28).to(dtype).contiguous(memory_format=torch.channels_last)
    a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
    best = 0.0
    for fn, flop in ((lambda: conv(x), 2 * 16 * 28 * 28 * 1024 * 1024), (lambda: a @ b, 2 * 2048 ** 3)):
        with torch.no_grad():
            fn()
            times = []
            for _ in range(max(3, repeats)):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        best = max(best, flop / statistics.median(times) / 1e9)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="image folder (root/<class>/* or root/<split>/<class>/*)")
    ap.add_argument("--generate", type=int, default=5000, help="without --images: this many generated 500×375 JPEGs")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="auto", help="cnnbase precision (auto runs the fidelity probe)")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--plain-limit", type=int, default=400, help="images for the slow plain loop (a)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of (c) and (d); medians are printed")
    ap.add_argument("--rounds", type=int, default=1, help="alternate (a) and (b) this many times; medians are printed")
    args = ap.parse_args()

    from cnnbase.backbones import load_backbone
    from cnnbase.datasets import open_dataset
    from cnnbase.features.extract import ModelRunner, _ViewsDataset
    from cnnbase.features.store import FeatureStore
    from cnnbase.features.views import JitterSpec
    from cnnbase.runner import Context, FeatureOptions, extract

    tmp = Path(tempfile.mkdtemp(prefix="cnnbase-bench-"))
    root = args.images or generate(Path(tempfile.gettempdir()) / f"cnnbase-bench-{args.generate}", args.generate)
    ds = open_dataset(str(root))
    splits = [s for s in ds.splits if s != "all"] or ["all"]
    if "all" in ds.splits and len(ds.splits) > 1 and set(splits) == {"train", "test"}:
        splits = ["all"]
    samples = [s for sp in splits for s in ds.samples(sp)]
    if args.limit:
        samples = samples[: args.limit]
    from cnnbase.datasets.base import ImageSet

    bench = ImageSet(name="bench", task="classification", root=Path(root), classes=["x"], splits={"all": samples},
                     labels={"all": np.zeros(len(samples), np.int64)})
    bb = load_backbone(args.model, "random")
    layer = args.layer or bb.spec.default_layer
    node = bb.resolve_layer(layer).node
    print(f"{len(samples)} images from {root}; {args.model} {layer} ({node}); random weights; "
          f"{torch.get_num_threads()} threads")

    plain_paths = [s.path for s in samples[: args.plain_limit]]
    opts = FeatureOptions(weights="random", precision=args.precision, batch_size=args.batch_size, on_bad_image="skip",
                          compile={"auto": None, "on": True, "off": False}[args.compile])
    rounds = []
    for r in range(max(1, args.rounds)):
        a = plain_loop(plain_paths, args.model, node, args.batch_size)
        ctx = Context(store=FeatureStore(tmp / f"store{r}"), progress=False)  # fresh: nothing cached between rounds
        t0 = time.perf_counter()
        (entry,) = extract(args.model, bench, layers=layer, splits=["all"], opts=opts, ctx=ctx)
        wall = time.perf_counter() - t0
        rounds.append((a, len(samples) / wall, wall))
        if args.rounds > 1:
            print(f"    round {r + 1}: (a) {a:.1f} img/s   (b) {rounds[-1][1]:.1f} img/s ({wall:.1f} s)   b/a {rounds[-1][1] / a:.2f}x")
    a, b, wall = (statistics.median(v) for v in zip(*rounds))
    ratio = statistics.median(rb / ra for ra, rb, _ in rounds)
    med = " (medians)" if args.rounds > 1 else ""
    print(f"(a) plain torchvision loop      {a:8.1f} img/s   ({len(plain_paths)} images){med}")
    m = entry.manifest() or {}
    used = m.get("run", {})
    probe = used.get("probe") or {}  # None when --precision forced one (no probe ran)
    print(f"(b) cnnbase extract, end to end {b:8.1f} img/s   ({wall:.1f} s incl. set-up; precision {used.get('precision', '?')}, "
          f"compile {used.get('compile', '?')}, probe {probe.get('verdict', 'none')}){med}")
    if "min_cosine" in probe:
        print(f"    probe on {probe.get('images')} images: min cosine {probe['min_cosine']:.5f}, relative error "
              f"{100 * probe['median_rel_error']:.2f}%, 10-NN {probe['knn10_overlap']:.3f}, top-1 {probe['top1_agreement']:.3f}")
    print(f"    {used.get('workers')} decode worker(s) + {used.get('threads')} torch thread(s); plan {used.get('cpu_split')}")

    run_opts = replace(opts, precision=used.get("precision", "fp32"), compile=bool(used.get("compile", False)))
    runner = ModelRunner(bb, {layer: node}, precision=run_opts.precision, compile=run_opts.compile)
    x = torch.randint(0, 256, (args.batch_size, 3, bb.preprocess.crop, bb.preprocess.crop), dtype=torch.uint8)
    runner(x)  # warm-up (and compile)
    cs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for _ in range(4):
            runner(x)
        cs.append(4 * args.batch_size / (time.perf_counter() - t))
    c = statistics.median(cs)
    print(f"(c) model alone ({run_opts.precision}{', compiled' if run_opts.compile else ''})   {c:8.1f} img/s")

    from torch.utils.data import DataLoader

    from cnnbase.features.extract import _collate
    from cnnbase.runner import fast_variant

    pre = fast_variant(bb.preprocess, run_opts.precision)  # the preprocessing (b) used (region resize with bf16)
    dset = _ViewsDataset(samples, pre, JitterSpec.parse("none"))
    cores = len(__import__("os").sched_getaffinity(0))
    ds_ = []
    for _ in range(max(1, args.repeats - 1)):
        t = time.perf_counter()
        norm = partial(_collate, normalize=(pre, runner.dtype, True))  # what cnnbase's decoding does
        for _ in DataLoader(dset, batch_size=args.batch_size, num_workers=cores, collate_fn=norm):
            pass
        ds_.append(len(samples) / (time.perf_counter() - t))
    d = statistics.median(ds_)
    print(f"(d) decode + preprocess ({cores} procs) {d:8.1f} img/s")
    L = 1 / (1 / c + 1 / d)
    print(f"b/a = {ratio:.2f}x{' (median of the rounds)' if args.rounds > 1 else ''}    L = 1/(1/c + 1/d) = {L:.1f} img/s    b/L = {b / L:.2f}")
    print(f"b/a at the limit L: L/a = {L / a:.2f}x; with the model alone: c/a = {c / a:.2f}x (no pipeline exceeds it)")
    gflop = model_gflop(bb.model, node, bb.preprocess.crop)
    peak = kernel_peak(run_opts.precision, args.repeats)
    ceiling = peak / gflop
    print(f"(e) {gflop:.3g} GFLOP per image; this CPU's fastest {run_opts.precision} kernels (1x1 conv, matmul) run "
          f"{peak:.0f} GFLOP/s -> at most {ceiling:.1f} img/s; (c) runs at {100 * c / ceiling:.0f}% of that")
    print(f"    so no extraction here exceeds b/a = {ceiling / a:.2f}x (decoding free, every FLOP at the kernels' peak)")


if __name__ == "__main__":
    main()
