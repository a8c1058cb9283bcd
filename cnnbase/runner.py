"""The only module that wires the stages together: dataset → backbone → store → head → metric → record.

Every function here is also the Python API (re-exported by :mod:`cnnbase`); the CLI only parses options and calls
these. Precedence for each setting: explicit argument (CLI option) > protocol card > ``datasets.yaml`` > default.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import LoadedBackbone, load_backbone
from .backbones.spec import Preprocess
from .config import default_store
from .datasets import ImageSet, dataset_config, open_dataset
from .datasets.base import Sample, retrieval_from_labels
from .errors import ConfigError, StoreError
from .features.extract import (
    PLAN_MIN_INPUTS,
    PRECISIONS,
    ModelRunner,
    Tap,
    default_workers,
    plan_cpu_split,
    resolve_device,
    run_extraction,
)
from .features.store import Features, FeatureStore, StoreEntry, key_of
from .features.views import JitterSpec

DEFAULT_METRIC = {"classification": "accuracy", "multilabel": "voc07_map", "attributes": "mean_auc", "retrieval": "oxford_map"}
STORAGE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class FeatureOptions:
    """Everything about feature extraction that changes the numbers, plus how to run it.

    The first group enters the store key; ``batch_size``, ``workers``, ``shard_size``, ``on_bad_image``,
    ``channels_last`` and ``device`` do not (fp32 is fp32 on either device: TF32 is off on CUDA).
    """

    weights: str | None = None
    seed: int = 0
    preprocess: str | None = None  # override, e.g. "square:221"
    jitter: str = "none"
    pool: str = "none"
    precision: str = "auto"  # auto: the fast path where a probe on the run's own images shows it faithful
    dtype: str = "float32"
    compile: bool | None = None  # None: compile when the run is long enough to repay it
    batch_size: int = 32
    workers: int | None = None
    shard_size: int = 1024
    on_bad_image: str = "fail"
    channels_last: bool = True
    device: str = "auto"  # auto: CUDA when torch sees it, else the CPU


@dataclass
class Context:
    """What a run shares across stages: the store, the results file, a progress display, loaded models."""

    store: FeatureStore = field(default_factory=lambda: FeatureStore(default_store()))
    results: Path | None = None
    progress: bool = True
    datasets_file: str | None = None
    root: str | None = None
    _backbones: dict[tuple, LoadedBackbone] = field(default_factory=dict)
    _cpu_plans: dict[tuple, tuple[int, int, dict]] = field(default_factory=dict)  # one timing per model and dataset

    def backbone(self, name: str, opts: FeatureOptions) -> LoadedBackbone:
        k = (name, opts.weights, opts.seed)
        if k not in self._backbones:
            self._backbones[k] = load_backbone(name, opts.weights, seed=opts.seed)
        return self._backbones[k]

    def dataset(self, dataset: str | ImageSet) -> ImageSet:
        if isinstance(dataset, ImageSet):
            return dataset
        return _open_cached(str(dataset), self.root, self.datasets_file)


@lru_cache(maxsize=16)
def _open_cached(name: str, root: str | None, datasets_file: str | None) -> ImageSet:
    return open_dataset(name, root=root, datasets=datasets_file)


def _ctx(ctx: Context | None, store: str | os.PathLike[str] | None = None) -> Context:
    c = ctx or Context()
    if store is not None:
        c.store = FeatureStore(store)
    return c


def default_splits(ds: ImageSet) -> list[str]:
    """The splits a protocol uses: the configured train/test splits, else every split but ``all``."""
    cfg = dataset_config(ds.name) if ds.name else None
    if ds.task == "retrieval":
        return [s for s in ("query", "database") if s in ds.splits]
    if cfg and cfg.train_split and cfg.test_split:
        return [cfg.train_split, cfg.test_split]
    splits = [s for s in ds.splits if s != "all"]
    return splits or list(ds.splits)


def train_test_splits(ds: ImageSet, train: str | None, test: str | None, *, disjoint: bool = True) -> tuple[str, str]:
    """The (train, test) splits: as given, else the dataset's configured ones, else trainval/train and test/val.
    With ``disjoint``, a test image that is also a training image is an error (it would inflate every score)."""
    cfg = dataset_config(ds.name) if ds.name else None
    tr = train or (cfg.train_split if cfg and cfg.train_split else None) or next((s for s in ("trainval", "train") if s in ds.splits), None)
    te = test or (cfg.test_split if cfg and cfg.test_split else None) or next((s for s in ("test", "val") if s in ds.splits and s != tr), None)
    if not tr or not te:
        raise ConfigError(f"dataset {ds.name!r} has splits {', '.join(ds.splits)}; choose them with --train-split and --test-split")
    if disjoint and tr in ds.splits and te in ds.splits:
        seen = {json.dumps(x.identity()) for x in ds.samples(tr)}
        shared = sum(json.dumps(x.identity()) in seen for x in ds.samples(te))
        if shared:
            raise ConfigError(f"{ds.name}: the training split {tr!r} holds {shared} image(s) of the test split {te!r}; "
                              "choose disjoint --train-split and --test-split")
    return tr, te


# -- extraction -------------------------------------------------------------------------------------------------
def fast_variant(pre: Preprocess, precision: str) -> Preprocess:
    """``pre`` as a run at ``precision`` uses it: the fast path (bf16/fp16) also resizes only the crop region
    (``Preprocess.region_resize``), which the precision probe checks together with the arithmetic."""
    return replace(pre, region_resize=True) if precision in ("bf16", "fp16") and pre.mode == "center_crop" else pre


def run_preprocess(bb: LoadedBackbone, override: str | None, precision: str) -> Preprocess:
    """The preprocessing a run uses: the backbone's, with ``--preprocess`` applied, in its ``precision`` variant."""
    return fast_variant(bb.preprocess.override(override), precision)


def feature_fields(bb: LoadedBackbone, layer: str, ds: ImageSet, split: str, opts: FeatureOptions) -> dict[str, Any]:
    """The store-key fields of one (backbone, layer, dataset, split) under ``opts`` (precision already resolved)."""
    if opts.precision == "auto":
        raise ValueError("resolve precision='auto' before computing a store key")
    tap = bb.resolve_layer(layer)
    return {
        "backbone": bb.name,
        "weights": bb.weights_id,
        "layer": tap.name,
        "node": tap.node,
        "preprocess": run_preprocess(bb, opts.preprocess, opts.precision).to_dict(),
        "jitter": JitterSpec.parse(opts.jitter).to_dict(),
        "pool": opts.pool,
        "precision": opts.precision,
        "dtype": opts.dtype,
        "dataset": ds.name,
        "split": split,
        "samples": ds.split_hash(split),
    }


def extract(
    model: str,
    dataset: str | ImageSet,
    *,
    layers: Sequence[str] | str | None = None,
    splits: Sequence[str] | None = None,
    opts: FeatureOptions | None = None,
    store: str | os.PathLike[str] | None = None,
    ctx: Context | None = None,
) -> list[StoreEntry]:
    """Extract features of ``model`` at ``layers`` for ``splits`` of ``dataset`` into the store (resumable).

    A layer whose entry is already complete costs nothing; several layers share one forward pass.

    Example:
        >>> entries = extract("alexnet", "voc2007", layers="fc6,fc7", opts=FeatureOptions(jitter="razavian"))  # doctest: +SKIP
    """
    c = _ctx(ctx, store)
    o = opts or FeatureOptions()
    if o.dtype not in STORAGE_DTYPES:
        raise ConfigError(f"unknown --dtype {o.dtype!r}; choose {', '.join(STORAGE_DTYPES)}")
    if o.on_bad_image not in ("fail", "skip"):
        raise ConfigError(f"unknown --on-bad-image {o.on_bad_image!r}; choose fail or skip")
    for what, value, least in (("--batch-size", o.batch_size, 1), ("shard_size", o.shard_size, 1), ("--workers", o.workers, 0)):
        if value is not None and value < least:
            raise ConfigError(f"{what} {value}: give {least} or more")
    device = resolve_device(o.device)
    ds = c.dataset(dataset)
    bb = c.backbone(model, o)
    names = _layer_list(layers, bb)
    bb_pre = bb.preprocess.override(o.preprocess)
    entries: list[StoreEntry] = []
    for split in splits or default_splits(ds):
        samples = ds.samples(split)
        if not samples:  # an entry of nothing could never be completed
            hint = ("the automatic split puts every fifth image of each class into test: give each class 5 images or more, or "
                    "use root/train and root/test folders") if split == "test" and "all" in ds.splits else "choose another --split"
            raise ConfigError(f"{ds.name}/{split} has no images; {hint}")
        precisions = resolve_precision(c, bb, ds, names, o)
        split_entries = {n: c.store.entry(feature_fields(bb, n, ds, split, replace(o, precision=precisions[n][0]))) for n in names}
        entries.extend(split_entries.values())
        if o.on_bad_image == "fail":
            _refuse_skipped(split_entries.values(), samples)
        todo = {n: e for n, e in split_entries.items() if not e.complete}
        if not todo:
            continue
        jitter = JitterSpec.parse(o.jitter)
        workers = default_workers(device.split(":")[0]) if o.workers is None else o.workers
        with _locked(list(todo.values())):
            todo = {n: e for n, e in todo.items() if not e.complete}  # another process may have finished it
            for precision in sorted({precisions[n][0] for n in todo}):
                group = {n: e for n, e in todo.items() if precisions[n][0] == precision}
                if group:
                    _extract_group(c, bb, bb_pre, ds, split, samples, group, precisions, o, jitter, workers, precision, device)
    return entries


def _refuse_skipped(entries, samples) -> None:  # type: ignore[no-untyped-def]
    """Under ``--on-bad-image fail``, features stored by an earlier ``skip`` run (complete or in kept shards) are not
    silently reused: their bad images are listed as an error."""
    from .errors import CnnbaseError

    bad: dict[int, str] = {}
    for e in entries:
        m = e.manifest() or {}
        listed = list(m.get("skipped", []))
        if m.get("status") == "partial":
            for meta_p in sorted((e.path / "shards").glob("*.json")):
                if meta_p.stem.isdigit():
                    listed.extend((e.shard_meta(int(meta_p.stem)) or {}).get("skipped", []))
        bad.update({int(s["index"]): s["reason"] for s in listed})
    if bad:
        shown = "; ".join(f"{samples[i].path}: {r}" for i, r in sorted(bad.items())[:20])
        raise CnnbaseError(
            f"{len(bad)} bad image(s) were skipped by an earlier --on-bad-image skip run: {shown}; fix them and delete "
            "the store entry, or rerun with --on-bad-image skip"
        )


def _extract_group(c, bb, bb_pre, ds, split, samples, todo, precisions, o, jitter, workers, precision, device):  # type: ignore[no-untyped-def]
    """One forward pass per batch for every layer of ``todo`` (all at the same precision)."""
    runner = ModelRunner(
        _with_preprocess(bb, fast_variant(bb_pre, precision)),
        {n: bb.resolve_layer(n).node for n in todo},
        precision=precision,
        pool=o.pool,
        channels_last=o.channels_last,
        compile=bool(o.compile),
        device=device,
    )
    import torch

    for e in todo.values():
        e.begin([s.id for s in samples], o.shard_size, {"views": jitter.views})
    taps = [Tap(n, bb.resolve_layer(n).node, e) for n, e in todo.items()]
    threads, split_plan = torch.get_num_threads(), {}
    model_s = None
    batch = max(1, o.batch_size // jitter.views) * jitter.views  # network inputs per forward pass, as the run makes them
    if o.workers is None and len(samples) * jitter.views >= PLAN_MIN_INPUTS and runner.device.type == "cpu":
        key = (bb.name, bb.weights_id, ds.name, tuple(todo), precision, o.jitter, o.pool, o.batch_size, o.compile, threads)
        if key not in c._cpu_plans:  # the dataset's other splits decode and run alike: timed once
            plan = plan_cpu_split(runner, samples, jitter, batch)
            c._cpu_plans[key] = (plan[0], plan[1], {**plan[2], "timed_on": split} if plan[2] else {})
        workers, plan_threads, split_plan = c._cpu_plans[key]
        torch.set_num_threads(plan_threads)
        if split_plan:
            core_ms = split_plan.get("model_core_ms_per_image_1_thread") if plan_threads == 1 else None
            model_s = (core_ms or split_plan["model_core_ms_per_image"]) / 1000 / plan_threads / jitter.views  # wall s per input
    if not runner.compiled and resolve_compile(o, len(samples) * jitter.views, model_s):
        runner.enable_compile()
    compiled_probe = None
    if runner.compiled and precision != "fp32":  # at the run's batch shape, padded to as it runs
        compiled_probe = _probe_compiled(c, bb, ds, runner, list(todo), precisions, o, batch)
    try:
        with _progress(c.progress, f"{bb.name} {','.join(todo)} · {ds.name}/{split} · {precision}", len(samples)) as prog:
            run_extraction(
                runner,
                samples,
                taps,
                jitter=jitter,
                shard_size=o.shard_size,
                batch_size=o.batch_size,
                workers=workers,
                storage_dtype=np.dtype(o.dtype),
                on_bad_image=o.on_bad_image,
                progress=prog,
            )
    finally:
        used_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    n_shards = max(1, (len(samples) + o.shard_size - 1) // o.shard_size)

    for n, e in todo.items():
        run = {
            "precision": precision,
            "requested_precision": o.precision,
            "device": device,
            "probe": precisions[n][1],
            "compile": bool(runner.compiled),
            "compiled_probe": None if compiled_probe is None else compiled_probe[n],
            "region_resize": runner.preprocess.region_resize,
            "threads": used_threads,
            "workers": workers,
            "cpu_split": split_plan,
            "batch_size": o.batch_size,
            "images_per_s": round(prog.rate, 2),
        }
        e.finalize(n_shards, {"views": jitter.views, "layer_doc": bb.resolve_layer(n).doc, "run": run, "versions": _versions()})
        skipped = e.manifest().get("skipped", [])  # type: ignore[union-attr]
        if skipped:
            from .cli._console import err_console

            err_console.print(
                f"[yellow]warning[/]: {len(skipped)} bad image(s) skipped in {ds.name}/{split} (listed in {e.manifest_path})",
                soft_wrap=True,
            )


COMPILE_MIN_IMAGES = 1000  # without a timing: below this many inputs compiling does not pay on the CPU (PERF.md)
COMPILE_MIN_SECONDS = 60.0  # with one: compile when the eager model would run this long


def resolve_compile(o: FeatureOptions, n_inputs: int, eager_s_per_input: float | None = None) -> bool:
    """``--compile`` as given; else compile when it repays its cost: compiling takes 5–25 s here and at best halves
    the model's time (ResNet-50 bf16: 25 → 52 img/s; AlexNet: no gain), so only when the eager model would run
    :data:`COMPILE_MIN_SECONDS` or longer (from the timing of the CPU plan) or, untimed, on
    :data:`COMPILE_MIN_IMAGES` inputs or more."""
    if o.compile is not None:
        return bool(o.compile)
    if eager_s_per_input is not None:
        return n_inputs * eager_s_per_input >= COMPILE_MIN_SECONDS
    return n_inputs >= COMPILE_MIN_IMAGES


def resolve_precision(
    c: Context, bb: LoadedBackbone, ds: ImageSet, layers: Sequence[str], o: FeatureOptions
) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """Per layer: the precision to use and the probe's figures (None when no probe ran).

    ``auto`` compares the fast path (bf16 where the hardware has it) with fp32 on up to 64 of the dataset's own
    images, spread over its protocol splits (:func:`probe_samples`), and keeps it only if every figure passes
    :data:`PROBE_THRESHOLDS`; otherwise fp32, said in one line. One probe decides for every split of the dataset
    (train and test features never differ in precision) and is cached in the store (``_probes/``), so the other
    splits and reruns decide the same way without recomputing.
    """
    from .features.extract import PROBE_THRESHOLDS, fast_precision

    if o.precision != "auto":
        if o.precision not in PRECISIONS:
            raise ConfigError(f"unknown --precision {o.precision!r}; choose auto, {', '.join(PRECISIONS)}")
        return {n: (o.precision, None) for n in layers}
    device = resolve_device(o.device)
    fast = fast_precision(device)
    if fast == "fp32":
        return {n: ("fp32", {"verdict": "no native bf16 on this device"}) for n in layers}
    out: dict[str, tuple[str, dict[str, Any] | None]] = {}
    paths = {n: _probe_cache(c, bb, ds, n, o, fast) for n in layers}
    pending = []
    for n in layers:
        fig = json.loads(paths[n].read_text()) if paths[n].is_file() else None
        # a verdict is complete with its fp32 features (none are kept where no image was readable: no "images")
        if fig is not None and ("images" not in fig or _probe_ref(paths[n]).is_file()):
            out[n] = (fig["chosen"], fig)
        else:
            pending.append(n)
    if pending:
        import io

        from .features.store import atomic_write_bytes

        refs: dict[str, np.ndarray] = {}
        figs = _run_probe(bb, bb.preprocess.override(o.preprocess), probe_samples(ds), pending, o, fast, device, refs)
        for n, fig in figs.items():
            fig["splits"] = default_splits(ds)  # what the sample was drawn from
            paths[n].parent.mkdir(parents=True, exist_ok=True)
            if n in refs:  # kept for the compiled model's check (:func:`_probe_compiled`)
                buf = io.BytesIO()
                np.save(buf, refs[n], allow_pickle=False)
                atomic_write_bytes(_probe_ref(paths[n]), buf.getvalue())
            atomic_write_bytes(paths[n], json.dumps(fig, indent=1).encode())
            out[n] = (fig["chosen"], fig)
            if fig["chosen"] != fast:
                from .cli._console import err_console

                err_console.print(
                    f"[yellow]precision[/]: {fast} features of {bb.name} {n} differ from fp32 on this run's images "
                    f"(min cosine {fig['min_cosine']:.4f}, 10-NN overlap {fig['knn10_overlap']:.2f}, top-1 kept "
                    f"{fig['top1_agreement']:.2f}; need {PROBE_THRESHOLDS}); using fp32"
                )
    return out


def probe_samples(ds: ImageSet) -> list[Sample]:
    """The images the precision probe samples from: the dataset's protocol splits (:func:`default_splits`) in order,
    each image once (VOC's trainval and test, a retrieval set's queries and database), whichever split is extracted."""
    seen: set[str] = set()
    out = []
    for split in default_splits(ds):
        for s in ds.samples(split):
            if (k := json.dumps(s.identity())) not in seen:
                seen.add(k)
                out.append(s)
    return out


def _probe_cache(c: Context, bb: LoadedBackbone, ds: ImageSet, layer: str, o: FeatureOptions, fast: str) -> Path:
    """Where the probe's verdict is cached: keyed by everything its figures depend on, the machine's kind included
    (:func:`compute_kind`)."""
    from .features.extract import PROBE_IMAGES, PROBE_THRESHOLDS, compute_kind

    splits = default_splits(ds)
    key = key_of({
        "backbone": bb.name, "weights": bb.weights_id, "node": bb.resolve_layer(layer).node,
        "preprocess": bb.preprocess.override(o.preprocess).to_dict(), "pool": o.pool, "fast": fast,
        "fast_preprocess": run_preprocess(bb, o.preprocess, fast).to_dict(),
        "dataset": ds.name, "splits": splits, "samples": [ds.split_hash(sp) for sp in splits],
        "images": PROBE_IMAGES, "thresholds": PROBE_THRESHOLDS, "computed_on": compute_kind(resolve_device(o.device)),
    })
    return c.store.root / "_probes" / f"{bb.name}-{layer}-{key[:16]}.json"


def _probe_compiled(c, bb, ds, runner, layers, precisions, o, batch):  # type: ignore[no-untyped-def]
    """The compiled model against the fp32 features the precision probe kept, on the same images, before the run.

    Compiling (with weight freezing) folds each batch norm into its convolution's low-precision weights, so the run's
    numbers are not those of the eager model the probe passed (docs/PRECISION.md: up to a seventh more relative error
    on ResNet-50). Below :data:`PROBE_THRESHOLDS` the run goes on with the eager model, said in one line. Fed at the
    run's batch shape, this is also the compile's warm-up. Figures per layer; None where no probe ran (a precision
    given with ``--precision``, or no readable image).
    """
    from .features.extract import PROBE_THRESHOLDS, fidelity, passes

    fast = precisions[layers[0]][0]
    paths = {n: _probe_ref(_probe_cache(c, bb, ds, n, o, fast)) for n in layers}
    if not all(precisions[n][1] and "images" in precisions[n][1] and paths[n].is_file() for n in layers):
        return None
    batches = _probe_inputs(probe_samples(ds), [runner.preprocess])
    if batches is None:
        return None
    (x,) = batches
    got: dict[str, list] = {n: [] for n in layers}
    for start in range(0, len(x), batch):
        out = runner(x[start:start + batch], pad_to=batch)
        for n in layers:
            got[n].append(out[n])
    figs = {}
    for n in layers:
        figs[n] = fidelity(np.load(paths[n], allow_pickle=False), np.concatenate(got[n]))
        figs[n]["verdict"] = "pass" if passes(figs[n]) else "fail"
    if runner.compiled and any(f["verdict"] == "fail" for f in figs.values()):
        from .cli._console import err_console

        worst = min(figs.values(), key=lambda f: f["min_cosine"])
        err_console.print(
            f"[yellow]compile[/]: the compiled {fast} {bb.name} differs from fp32 on this run's images (min cosine "
            f"{worst['min_cosine']:.4f}, 10-NN overlap {worst['knn10_overlap']:.2f}, top-1 kept {worst['top1_agreement']:.2f}; "
            f"need {PROBE_THRESHOLDS}); running it uncompiled"
        )
        runner.disable_compile()
    return figs


def _probe_ref(path: Path) -> Path:
    """Where a probe (``_probes/*.json``) keeps the fp32 features of its images."""
    return path.with_suffix(".fp32.npy")


def _probe_inputs(samples, pres):  # type: ignore[no-untyped-def]
    """The probe's images (:func:`probe_sample` of ``samples``), each decoded once, as one uint8 batch per
    preprocessing of ``pres`` (the same pixels); None when none is readable."""
    from concurrent.futures import ThreadPoolExecutor

    from .features.extract import _ViewsDataset, cores, join_views, probe_sample
    from .features.views import make_views

    none = JitterSpec.parse("none")
    with ThreadPoolExecutor(max_workers=cores()) as pool:  # Pillow decodes without the GIL
        decoded = pool.map(_ViewsDataset(samples, pres[0], none).decode, probe_sample(len(samples)))
        imgs = [im for im in decoded if not isinstance(im, str)]
        if not imgs:
            return None
        out: dict[Preprocess, Any] = {}
        for p in pres:
            if p not in out:
                out[p] = join_views(list(pool.map(lambda im, p=p: make_views(im, p, none), imgs)))
        return [out[p] for p in pres]


def _run_probe(bb, pre, samples, layers, o, fast, device="cpu", refs=None):  # type: ignore[no-untyped-def]
    """fp32 and the fast path on the same sample of images; figures per layer (and, into ``refs``, the fp32
    features)."""
    from .features.extract import fidelity, passes

    fpre = fast_variant(pre, fast)
    # each image decoded once; the fast path's own preprocessing (when it has one) applied to the same pixels
    batches = _probe_inputs(samples, [pre, fpre])
    if batches is None:
        return {n: {"verdict": "no readable image to probe", "chosen": "fp32"} for n in layers}
    x, xf = batches
    nodes = {n: bb.resolve_layer(n).node for n in layers}
    ref = {k: [] for k in layers}
    fst = {k: [] for k in layers}
    kw = {"pool": o.pool, "channels_last": o.channels_last, "device": device}
    r32 = ModelRunner(_with_preprocess(bb, pre), nodes, precision="fp32", **kw)
    rf = ModelRunner(_with_preprocess(bb, fpre), nodes, precision=fast, **kw)
    for start in range(0, len(x), o.batch_size):
        for store_, runner_, xs in ((ref, r32, x), (fst, rf, xf)):
            out = runner_(xs[start:start + o.batch_size])
            for k in layers:
                store_[k].append(out[k])
    figs = {}
    for n in layers:
        if refs is not None:
            refs[n] = np.concatenate(ref[n])
        fig = fidelity(np.concatenate(ref[n]), np.concatenate(fst[n]))
        ok = passes(fig)
        fig.update(candidate=fast, chosen=fast if ok else "fp32", verdict="pass" if ok else "fail")
        figs[n] = fig
    return figs




def _layer_list(layers: Sequence[str] | str | None, bb: LoadedBackbone) -> list[str]:
    if layers is None:
        return [bb.spec.default_layer]
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    names = [bb.resolve_layer(x.strip()).name for x in items if x.strip()]
    return list(dict.fromkeys(names))


def _with_preprocess(bb: LoadedBackbone, pre: Any) -> LoadedBackbone:
    if pre == bb.preprocess:
        return bb
    return LoadedBackbone(spec=bb.spec, model=bb.model, weights_id=bb.weights_id, preprocess=pre)


class _locked:
    def __init__(self, entries: list[StoreEntry]) -> None:
        self.entries, self.stack = sorted(entries, key=lambda e: str(e.path)), None

    def __enter__(self):  # type: ignore[no-untyped-def]
        import contextlib

        self.stack = contextlib.ExitStack()
        for e in self.entries:
            self.stack.enter_context(e.lock())
        return self

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        return self.stack.__exit__(*exc)  # type: ignore[union-attr]


def _progress(enabled: bool, description: str, total: int):  # type: ignore[no-untyped-def]
    from .cli._progress import ImageProgress

    return ImageProgress(description, total, enabled=enabled)


def _versions() -> dict[str, str]:
    from .results.records import versions

    return versions()


def load_features(
    model: str,
    dataset: str | ImageSet,
    *,
    split: str,
    layer: str | None = None,
    opts: FeatureOptions | None = None,
    store: str | os.PathLike[str] | None = None,
    ctx: Context | None = None,
    extract_missing: bool = True,
) -> Features:
    """The stored features of one split (extracting them first unless ``extract_missing`` is False).

    Example:
        >>> f = load_features("alexnet", "voc2007", split="test", layer="fc6")  # doctest: +SKIP
        >>> f.array.shape, len(f.ids)  # doctest: +SKIP
        ((4952, 4096), 4952)
    """
    c = _ctx(ctx, store)
    o = opts or FeatureOptions()
    ds = c.dataset(dataset)
    bb = c.backbone(model, o)
    name = bb.resolve_layer(layer).name
    precision = resolve_precision(c, bb, ds, [name], o)[name][0]
    entry = c.store.entry(feature_fields(bb, name, ds, split, replace(o, precision=precision)))
    if not entry.complete:
        if not extract_missing:
            raise StoreError(f"no features for {model} {layer} on {ds.name}/{split}; run `cnnbase extract` first")
        extract(model, ds, layers=[name], splits=[split], opts=o, ctx=c)
    return entry.load()


# -- normalisation --------------------------------------------------------------------------------------------
NORMALIZATIONS = ("l2", "none", "l2+power2")


def normalize(x: np.ndarray, how: str = "l2") -> np.ndarray:
    """Per-vector normalisation applied at evaluation time (raw activations stay in the store).

    ``l2``: unit length (Razavian: "every feature is L2-normalised"); ``l2+power2``: L2, then the signed
    power sign(x)|x|² of the paper's CNNaug setting, then L2 again; ``none``: raw.
    """
    from .heads.retrieval import l2_normalize, signed_power

    x = np.asarray(x, dtype=np.float32)
    if how == "none":
        return x
    if how == "l2":
        return l2_normalize(x)
    if how == "l2+power2":
        return l2_normalize(signed_power(l2_normalize(x), 2.0))
    raise ConfigError(f"unknown normalisation {how!r}; choose {', '.join(NORMALIZATIONS)}")


# -- SVMs -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SVMOptions:
    """The linear-SVM head: one-vs-rest (or one-vs-one) with C by k-fold cross-validation over a grid."""

    mode: str = "ovr"
    C: tuple[float, ...] | float = (0.01, 0.1, 1.0, 10.0, 100.0)
    cv_folds: int = 3
    loss: str = "squared_hinge"
    solver: str = "auto"
    difficult: str = "negative"
    normalization: str = "l2"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["C"] = list(self.C) if isinstance(self.C, tuple) else self.C
        return d


@dataclass
class TrainedHead:
    """A fitted SVM head with the key and file it is saved under."""

    head: Any
    key: str
    path: Path
    feature_key: str
    reused: bool


def _flatten_views(f: Features, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, sample index per row) of the valid samples, every view a row, normalised per view."""
    arr = np.asarray(f.array, dtype=np.float32)
    views = 1 if arr.ndim == 2 else arr.shape[1]
    idx = np.flatnonzero(f.valid)
    x = arr[idx].reshape(len(idx) * views, -1)
    return normalize(x, how), np.repeat(idx, views)


def train_svm(
    model: str,
    dataset: str | ImageSet,
    *,
    layer: str | None = None,
    train_split: str | None = None,
    opts: FeatureOptions | None = None,
    svm: SVMOptions | None = None,
    store: str | os.PathLike[str] | None = None,
    ctx: Context | None = None,
) -> TrainedHead:
    """Fit (or reload) linear SVMs on the training split's features; saved next to the features.

    The head's key covers the training features' key, the labels and every SVM option, so a rerun with nothing
    changed reloads the saved head instead of retraining. While it trains, its progress is checkpointed in
    ``svm-<key12>.ckpt/`` next to it: a killed run resumes there and gives bitwise the same head.
    """
    from .heads.svm import LinearSVMHead

    c = _ctx(ctx, store)
    o, s = opts or FeatureOptions(), svm or SVMOptions()
    ds = c.dataset(dataset)
    if ds.task == "retrieval":
        raise ConfigError(f"{ds.name} is a retrieval dataset; use `cnnbase evaluate --task retrieval`")
    tr, _ = train_test_splits(ds, train_split, "test" if "test" in ds.splits else train_split, disjoint=False)
    f = load_features(model, ds, split=tr, layer=layer, opts=o, ctx=c)
    y_all = ds.labels[tr]
    scoring = _cv_scoring(ds)
    parts = {"features": f.key, "labels": hashlib.sha256(np.ascontiguousarray(y_all).tobytes()).hexdigest(), "svm": s.to_dict()}
    if scoring is not None and scoring.__name__ != "voc07_ap":  # heads cross-validated by 11-point AP keep their keys
        parts["cv_scoring"] = scoring.__name__
    key = key_of(parts)
    entry_dir = Path(c.store.find(f.key).path)
    path = entry_dir / f"svm-{key[:12]}.npz"
    if path.is_file():
        return TrainedHead(LinearSVMHead.load(path), key, path, f.key, reused=True)
    x, rows = _flatten_views(f, s.normalization)
    y = y_all[rows]
    if y.ndim == 1 and len(present := np.unique(y)) < 2:
        only = ", ".join(repr(ds.classes[int(i)]) for i in present) or "none"
        raise ConfigError(f"{ds.name}/{tr}: the training images with features are all of one class ({only}); an SVM "
                          "needs two classes or more: add images of another class or choose another --train-split")
    mode = s.mode
    head = LinearSVMHead(
        mode=mode,
        C=s.C,
        cv_folds=s.cv_folds,
        loss=s.loss,
        solver=s.solver,
        difficult=s.difficult,
        seed=s.seed,
        scoring=scoring,
        # progress of a killed fit (per C value / batch of pairs / problem) is kept here and resumed by a rerun
        checkpoint_dir=entry_dir / f"svm-{key[:12]}.ckpt",
    )
    head.fit(x, y, groups=rows)
    head.save(path)
    return TrainedHead(head, key, path, f.key, reused=False)


def _cv_scoring(ds: ImageSet):  # type: ignore[no-untyped-def]
    """CV selects C with the per-class form of the benchmark's own metric (datasets.yaml): VOC07 11-point AP,
    VOC2010+ area AP or ROC AUC (UIUC attributes); VOC07 11-point AP for a multilabel set without one. None (the
    head's own accuracy) for single-label sets."""
    if ds.task not in ("multilabel", "attributes"):
        return None
    from .metrics import roc_auc, voc07_ap, voc_area_ap

    per_class = {"voc07_map": voc07_ap, "voc_area_map": voc_area_ap, "mean_auc": roc_auc}
    return per_class.get(ds.meta.get("metric"), voc07_ap)


# -- evaluation -----------------------------------------------------------------------------------------------
def evaluate(
    model: str,
    dataset: str | ImageSet,
    *,
    task: str | None = None,
    layer: str | None = None,
    train_split: str | None = None,
    test_split: str | None = None,
    metric: str | None = None,
    opts: FeatureOptions | None = None,
    svm: SVMOptions | None = None,
    normalization: str = "l2",
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    card: dict[str, Any] | None = None,
    label: str = "",
    ctx: Context | None = None,
) -> dict[str, Any]:
    """Score ``model``'s features on ``dataset`` with the benchmark's metric and append a record.

    ``task`` defaults to the dataset's own (``classification``/``multilabel``/``attributes``: SVMs trained on the
    training split, scored on the test split; ``retrieval``: L2 ranking of L2-normalised features). A labelled
    set can also be evaluated as retrieval: test images query the training images, same class = positive.

    Returns:
        The record (also appended to ``results``, default ``results/records.jsonl``).
    """
    from .metrics import METRICS
    from .results.records import append_record, new_record

    c = _ctx(ctx, store)
    o = opts or FeatureOptions()
    ds = c.dataset(dataset)
    task = task or ds.task
    if task not in ("classification", "multilabel", "attributes", "retrieval"):
        raise ConfigError(f"unknown --task {task!r}; choose classification, multilabel, attributes or retrieval")
    cfg_metric = ds.meta.get("metric") if task == ds.task else None
    metric = metric or cfg_metric or DEFAULT_METRIC[task]
    spec = METRICS.get(metric)
    bb = c.backbone(model, o)
    layer = bb.resolve_layer(layer).name
    if task == "retrieval":
        if spec.kind != "retrieval":
            raise ConfigError(f"metric {metric} does not score retrieval")
        if ds.task == "retrieval" and metric != ds.meta.get("metric", metric):  # each reads its own gnd layout
            raise ConfigError(f"{ds.name} is scored with {ds.meta['metric']} (datasets.yaml), not {metric}; drop --metric")
        if ds.task != "retrieval" and metric == "revisited_map":
            raise ConfigError(f"revisited_map needs easy/hard lists; the labels of {ds.name} give one positive list: use oxford_map")
        body = _evaluate_retrieval(model, ds, layer, o, normalization, metric, c, test_split, train_split)
    else:
        if ds.task == "retrieval":
            raise ConfigError(f"{ds.name} is a retrieval dataset; use --task retrieval")
        wanted = "classification" if ds.task == "classification" else "multilabel"  # single labels, or a 0/±1 matrix
        if spec.kind != wanted:
            raise ConfigError(f"metric {metric} does not score {ds.name} ({ds.task}: {'one label' if wanted == 'classification' else 'a label set'} per image)")
        body = _evaluate_svm(model, ds, layer, o, svm or SVMOptions(normalization=normalization), metric, c, train_split, test_split)
    rec = new_record(
        dataset=ds.name,
        task=task,
        backbone=bb.name,
        weights=bb.weights_id,
        layer=layer,
        node=bb.resolve_layer(layer).node,
        preprocess=bb.preprocess.override(o.preprocess).to_dict(),
        jitter=JitterSpec.parse(o.jitter).to_dict(),
        precision=body.pop("precision"),
        extraction=body.pop("extraction"),
        pool=o.pool,
        metric=metric,
        label=label,
        card=card or {},
        **body,
    )
    append_record(rec, results or c.results)
    return rec


def _per_class(values: np.ndarray | None, names: Sequence[str]) -> dict[str, float] | None:
    if values is None:
        return None
    return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, values)}


def _evaluate_svm(model, ds, layer, o, s, metric, c, train_split, test_split):  # type: ignore[no-untyped-def]
    from .metrics import compute

    tr, te = train_test_splits(ds, train_split, test_split)
    th = train_svm(model, ds, layer=layer, train_split=tr, opts=o, svm=s, ctx=c)
    f = load_features(model, ds, split=te, layer=layer, opts=o, ctx=c)
    arr = np.asarray(f.array, dtype=np.float32)
    views = 1 if arr.ndim == 2 else arr.shape[1]
    idx = np.flatnonzero(f.valid)
    if not len(idx):
        raise ConfigError(f"{ds.name}/{te}: none of its {len(f.valid)} test image(s) has features (all bad or skipped; "
                          f"listed in {c.store.find(f.key).manifest_path}); fix the images or choose another --test-split")
    x = normalize(arr[idx].reshape(len(idx) * views, -1), s.normalization)
    dec = th.head.decision_function(x)
    dec = dec.reshape(len(idx), views, -1).sum(axis=1)  # Razavian: sum the responses over an image's views
    y = ds.labels[te][idx]
    if ds.task == "classification":
        pred = th.head.predict_from_decision(dec)
        res = compute(metric, y_true=y, y_pred=pred, n_classes=len(ds.classes))
    else:
        res = compute(metric, scores=dec, labels=y)
    n_train = len(ds.samples(tr))
    return {
        "split": te,
        "train_split": tr,
        "value": float(res.value),
        "per_class": _per_class(res.per_item, ds.classes),
        "extra": {k: float(v) for k, v in res.extra.items()},
        "feature_keys": {"train": th.feature_key, "test": f.key},
        "head": {
            **s.to_dict(),
            "key": th.key,
            "file": str(th.path),
            "C_per_class": _per_class(np.asarray(th.head.C_, dtype=float), _problem_names(th.head, ds.classes)),
            "reused": th.reused,
        },
        "precision": f.manifest["fields"]["precision"],
        "extraction": f.manifest.get("run"),
        "n_train": n_train,
        "n_test": int(len(idx)),
        "n_skipped": int((~f.valid).sum()) + _skipped_in(c, th.feature_key),
        "views": views,
    }


def _problem_names(head: Any, classes: Sequence[str]) -> list[str]:
    pairs = getattr(head, "pairs_", None)
    if pairs is not None and len(pairs):
        return [f"{classes[a]}|{classes[b]}" for a, b in pairs]
    return list(classes)


def _skipped_in(c: Context, key: str) -> int:
    m = c.store.find(key).manifest() or {}
    return len(m.get("skipped", []))


def _evaluate_retrieval(model, ds, layer, o, how, metric, c, query_split, db_split):  # type: ignore[no-untyped-def]
    from .heads.retrieval import rank
    from .metrics import compute

    if ds.task == "retrieval":
        qs, dbs = query_split or "query", db_split or "database"
        gnd = ds.queries
    else:
        dbs, qs = train_test_splits(ds, db_split, query_split)
        gnd = retrieval_from_labels(ds, qs, dbs)
    fq = load_features(model, ds, split=qs, layer=layer, opts=o, ctx=c)
    fd = load_features(model, ds, split=dbs, layer=layer, opts=o, ctx=c)
    q = _pooled_views(fq, how)
    d = _pooled_views(fd, how)
    # rank only among database images that have features; map back to dataset indices
    d_idx = np.flatnonzero(fd.valid)
    q_idx = np.flatnonzero(fq.valid)
    ranks_local, _ = rank(q[q_idx], d[d_idx])
    ranks = d_idx[ranks_local]
    res = compute(metric, ranks=ranks, gnd=[gnd[i] for i in q_idx])
    per_query = None
    if res.per_item is not None:
        names = [ds.samples(qs)[i].id for i in q_idx]
        per_query = _per_class(res.per_item, names)
    return {
        "split": qs,
        "database_split": dbs,
        "value": float(res.value),
        "per_query": per_query,
        "extra": {k: float(v) for k, v in res.extra.items()},
        "feature_keys": {"query": fq.key, "database": fd.key},
        "head": {"type": "l2-ranking", "normalization": how, "views": "mean of normalised views, renormalised"},
        "precision": fq.manifest["fields"]["precision"],
        "extraction": fq.manifest.get("run"),
        "n_queries": int(len(q_idx)),
        "n_database": int(len(d_idx)),
        "n_skipped": int((~fq.valid).sum() + (~fd.valid).sum()),
    }


def _pooled_views(f: Features, how: str) -> np.ndarray:
    """One vector per image: normalised view vectors averaged, then normalised again (a single view: as is)."""
    arr = np.asarray(f.array, dtype=np.float32)
    if arr.ndim == 2:
        return normalize(np.nan_to_num(arr), how)
    n, v, d = arr.shape
    x = normalize(np.nan_to_num(arr.reshape(n * v, d)), how).reshape(n, v, d).mean(axis=1)
    return normalize(x, "l2" if how != "none" else "none")


__all__ = [
    "Context",
    "FeatureOptions",
    "SVMOptions",
    "evaluate",
    "extract",
    "load_features",
    "normalize",
    "train_svm",
]
