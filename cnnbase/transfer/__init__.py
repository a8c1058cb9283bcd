"""The Oquab et al. 2014 transfer protocol: multi-scale patches, adaptation layers, patch-score aggregation.

Pipeline (each stage cached and resumable)::

    training images ─► patch grid (~500 squares/image, 9 scales, ≥50% overlap)    patches.py
                    ─► frozen-layer activations of every patch, in the store       features.py
                    ─► labels from the boxes (0.2·|P|, 0.6·|B|, ≤ 1 object) + 10% of background
                    ─► FCa(2048, ReLU, dropout) → FCb(classes + background), SGD 0.01 ÷10 at plateaus   head.py
    test images     ─► same grid and activations ─► p(class | patch)
                    ─► score(class) = mean over patches of p^k, k = 5                  aggregate.py
                    ─► VOC07 11-point AP per class, mAP, a record; localisation maps  localisation.py

Settings: :class:`TransferOptions` (defaults = the card ``tasks/oquab2014.yaml``, which pins the published values
and names the open choices). Precedence: explicit option (CLI) > card > these defaults. A record lists every
setting that differs from the card as a deviation.

Example:
    >>> from cnnbase.transfer import evaluate, TransferOptions
    >>> rec = evaluate("alexnet", "voc2007")  # doctest: +SKIP
    >>> rec["metric"], round(rec["value"] * 100, 1)  # doctest: +SKIP
    ('voc07_map', 77.7)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from .aggregate import aggregate_scores
from .head import FitResult, HeadOptions, fit_head, predict_proba
from .localisation import localisation_map, save_map_png
from .patches import (
    DROPPED,
    OQUAB_SCALES,
    GridSpec,
    ImageObjects,
    LabelRules,
    label_counts,
    label_patches,
    objects_from_meta,
    patch_grid,
    subsample_background,
)

CARD_NAME = "oquab2014"


@dataclass(frozen=True)
class TransferOptions:
    """Every setting of a transfer run. The first groups change the numbers (and are recorded); ``extract_batch``,
    ``workers``, ``shard_size``, ``device`` and ``compile`` only change the speed."""

    # frozen layers and their cached activations
    weights: str | None = None
    weights_seed: int = 0
    layer: str | None = None  # None: fc7 when the backbone has it, else its pooled vector
    precision: str = "fp32"
    dtype: str = "float16"
    grid: GridSpec = field(default_factory=GridSpec)
    # training patches
    labels: LabelRules = field(default_factory=LabelRules)
    background_rate: float = 0.1
    # adaptation layers
    head: HeadOptions = field(default_factory=HeadOptions)
    seed: int = 0
    # test
    k: float = 5.0
    # speed only
    extract_batch: int = 256
    workers: int | None = None
    shard_size: int = 16
    on_bad_image: str = "fail"
    device: str = "auto"
    compile: bool = False

    def settings(self) -> dict[str, Any]:
        """The number-changing settings in the card's layout (what records store and deviations compare)."""
        return {
            "frozen": {"layer": self.layer or "auto", "precision": self.precision, "dtype": self.dtype},
            "patches": self.grid.to_dict(),
            "labels": {**self.labels.to_dict(), "background_rate": self.background_rate},
            "head": {k: getattr(self.head, k) for k in _HEAD_KEYS},
            "sgd": {k: getattr(self.head, k) for k in _SGD_KEYS},
            "test": {"k": self.k},
        }


_HEAD_KEYS = ("hidden", "dropout", "input_dropout", "init_std", "finetune_fc67")
_SGD_KEYS = tuple(f.name for f in fields(HeadOptions) if f.name not in _HEAD_KEYS)


# -- the card ---------------------------------------------------------------------------------------------------
def load_card(name: str | os.PathLike[str] = CARD_NAME) -> dict[str, Any]:
    """A protocol card by name (``tasks/<name>.yaml`` next to the package) or path."""
    from ..config import resource_path

    p = Path(name)
    if not p.suffix:
        try:
            p = resource_path(f"tasks/{name}.yaml")
        except ConfigError:
            raise ConfigError(f"no protocol card {name!r} (looked for tasks/{name}.yaml); pass a card file path") from None
    from ..config import read_yaml

    card = read_yaml(p)
    if not isinstance(card, dict) or not isinstance(card.get("settings"), dict):
        raise ConfigError(f"{p}: a transfer card needs a 'settings:' mapping")
    card.setdefault("name", p.stem)
    card["_path"] = str(p)
    return card


def card_hash(card: Mapping[str, Any]) -> str:
    from ..features.store import canonical_json

    clean = {k: v for k, v in card.items() if not k.startswith("_")}
    return hashlib.sha256(canonical_json(clean).encode()).hexdigest()[:12]


def options_from_card(card: Mapping[str, Any] | None = None, **overrides: Any) -> TransferOptions:
    """:class:`TransferOptions` from a card's ``settings`` (default: the oquab2014 card), then ``overrides``.

    ``overrides`` use the option names of :class:`TransferOptions`, :class:`GridSpec` (``scales``, ``target``,
    ``min_overlap``), :class:`LabelRules` and :class:`HeadOptions`; None values are ignored (CLI > card > defaults).
    """
    c = card if card is not None else load_card()
    s = c.get("settings", {})
    flat: dict[str, Any] = {}
    known_sections = {"frozen", "patches", "labels", "head", "sgd", "test"}
    unknown = sorted(set(s) - known_sections)
    if unknown:
        raise ConfigError(f"card {c.get('name')}: unknown settings section(s) {', '.join(unknown)}")
    for section, values in s.items():
        if not isinstance(values, dict):
            raise ConfigError(f"card {c.get('name')}: settings.{section} must be a mapping")
        for k, v in values.items():
            flat[k] = v
    flat.update({k: v for k, v in overrides.items() if v is not None})
    return _build_options(flat, where=f"card {c.get('name')}")


def _build_options(flat: dict[str, Any], *, where: str) -> TransferOptions:
    grid_keys = {f.name for f in fields(GridSpec)}
    label_keys = {f.name for f in fields(LabelRules)}
    head_keys = {f.name for f in fields(HeadOptions)}
    top_keys = {f.name for f in fields(TransferOptions)} - {"grid", "labels", "head"}
    unknown = sorted(set(flat) - grid_keys - label_keys - head_keys - top_keys)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    g = {k: flat[k] for k in grid_keys if k in flat}
    if "scales" in g:
        g["scales"] = tuple(float(x) for x in g["scales"])
    top = {k: flat[k] for k in top_keys if k in flat}
    if top.get("layer") == "auto":
        top["layer"] = None
    try:
        return TransferOptions(
            grid=GridSpec(**g),
            labels=LabelRules(**{k: flat[k] for k in label_keys if k in flat}),
            head=HeadOptions(**{k: flat[k] for k in head_keys if k in flat}),
            **top,
        )
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


#: Settings recorded but not counted as deviations: storage precision of the cached activations (float32 instead
#: of the card's float16 only removes a ~5e-4 relative rounding; it is not a protocol change).
NOT_DEVIATIONS = {("frozen", "dtype")}


def deviations(opts: TransferOptions, card: Mapping[str, Any]) -> list[str]:
    """``"section.key: card → used"`` for every protocol setting that differs from the card."""
    used = opts.settings()
    pinned = card.get("settings", {})
    out = []
    for section, values in used.items():
        for k, v in values.items():
            if k not in pinned.get(section, {}) or (section, k) in NOT_DEVIATIONS:
                continue
            ref = pinned[section][k]
            if not _same(ref, v):
                out.append(f"{section}.{k}: {ref!r} → {v!r}")
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    return a == b


# -- shared plumbing --------------------------------------------------------------------------------------------
def _context(ctx: Any, store: Any) -> Any:
    from ..features.store import FeatureStore
    from ..runner import Context

    c = ctx or Context()
    if store is not None:
        c.store = FeatureStore(store)
    return c


def _backbone(c: Any, model: str, o: TransferOptions) -> Any:
    from ..runner import FeatureOptions

    return c.backbone(model, FeatureOptions(weights=o.weights, seed=o.weights_seed))


def split_objects(ds: Any, split: str) -> list[ImageObjects]:
    """The boxes of every image of ``split`` from ``ds.meta['objects']`` (an error when the dataset has none)."""
    objs = ds.meta.get("objects")
    if not isinstance(objs, Mapping):
        raise DatasetError(
            f"dataset {ds.name!r} has no object boxes (meta['objects']); the transfer protocol labels patches from "
            "boxes: use a VOC devkit with its Annotations/ folder"
        )
    out = []
    missing = []
    for s in ds.samples(split):
        if s.id not in objs:
            missing.append(s.id)
            out.append(ImageObjects.empty())
            continue
        out.append(objects_from_meta(objs[s.id], ds.classes, where=f"{ds.name}/{s.id}"))
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) of {ds.name}/{split} have no annotation (e.g. {missing[0]}); "
            "restore their Annotations/*.xml files"
        )
    return out


def _objects_hash(objects: Sequence[ImageObjects]) -> str:
    h = hashlib.sha256()
    for o in objects:
        for a in (o.classes.astype(np.int64), o.boxes.astype(np.float64), o.difficult.astype(np.uint8)):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    return h.hexdigest()


def label_split(pf: Any, objects: Sequence[ImageObjects], n_classes: int, rules: LabelRules) -> tuple[np.ndarray, np.ndarray]:
    """Labels and reason codes of every patch of a split (patches of skipped images: dropped)."""
    labels = np.full(len(pf.patches), DROPPED, dtype=np.int16)
    why = np.full(len(pf.patches), 255, dtype=np.uint8)
    off = pf.offsets
    for i, obj in enumerate(objects):
        a, b = int(off[i]), int(off[i + 1])
        if a == b or not pf.valid[i]:
            continue
        labels[a:b], why[a:b] = label_patches(pf.boxes[a:b], obj, n_classes, rules)
    return labels, why


def _gather(array: np.ndarray, idx: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """``array[idx]`` for sorted ``idx`` from a memory map, in chunks (bounded temporary memory)."""
    out = np.empty((len(idx), array.shape[1]), dtype=array.dtype)
    for a in range(0, len(idx), chunk):
        out[a : a + chunk] = array[idx[a : a + chunk]]
    return out


# -- train ------------------------------------------------------------------------------------------------------
@dataclass
class TrainedTransfer:
    """A trained adaptation head with where it lives and what it was trained on."""

    fit: FitResult
    key: str
    path: Path
    feature_key: str
    layer: str
    node: str
    backbone: Any
    train_split: str
    counts: dict[str, Any]
    n_train_patches: int

    @property
    def model(self) -> Any:
        return self.fit.model

    @property
    def reused(self) -> bool:
        return self.fit.reused


def train(
    model: str,
    dataset: Any,
    *,
    opts: TransferOptions | None = None,
    train_split: str | None = None,
    store: str | os.PathLike[str] | None = None,
    ctx: Any = None,
    progress: bool | None = None,
    on_epoch: Any = None,
) -> TrainedTransfer:
    """Train (or resume, or reload) the adaptation layers on the training split's labelled patches.

    Patch activations are extracted first if the store lacks them. The head is saved next to the training
    features under a key covering the features, the boxes, the labelling rules, the background rate, the seed and
    every head/SGD option; a rerun with nothing changed reloads it.
    """
    from ..features.store import key_of
    from ..runner import train_test_splits
    from .features import extract_patch_features, finetune_trunk, frozen_layer, resolve_device
    from .progress import TrainProgress

    o = opts or options_from_card()
    c = _context(ctx, store)
    show = c.progress if progress is None else progress
    ds = c.dataset(dataset)
    if ds.task != "multilabel":
        raise ConfigError(f"the transfer protocol needs a multilabel dataset with boxes (e.g. voc2007); {ds.name} is {ds.task}")
    tr, _ = train_test_splits(ds, train_split, "test" if "test" in ds.splits else train_split, disjoint=False)
    objects = split_objects(ds, tr)
    bb = _backbone(c, model, o)
    layer, node = frozen_layer(bb, o.layer, finetune_fc67=o.head.finetune_fc67)
    pf = extract_patch_features(
        bb, ds, tr, c.store, layer=layer, node=node, grid=o.grid, precision=o.precision, dtype=o.dtype,
        batch_size=o.extract_batch, workers=_workers(o), shard_size=o.shard_size, on_bad_image=o.on_bad_image,
        device=o.device, compile=o.compile, progress=show,
    )
    n_classes = len(ds.classes)
    labels, why = label_split(pf, objects, n_classes, o.labels)
    keep = subsample_background(labels, n_classes, o.background_rate, o.seed)
    idx = np.flatnonzero(keep)
    counts = label_counts(labels, why, ds.classes)
    counts["kept_background"] = int((labels[idx] == n_classes).sum())
    counts["kept_total"] = int(len(idx))
    key = key_of(
        {
            "kind": "oquab2014-head",
            "features": pf.key,
            "classes": list(ds.classes),
            "objects": _objects_hash(objects),
            "labels": o.labels.to_dict(),
            "background_rate": o.background_rate,
            "seed": o.seed,
            "head": o.head.to_dict(),
        }
    )
    out_dir = pf.path / f"transfer-{key[:12]}"
    device = resolve_device(o.device)
    trunk = finetune_trunk(bb) if o.head.finetune_fc67 else None
    done = (out_dir / "head.pt").is_file()  # finished before: reloaded, no need to read the features
    x = np.zeros((0, pf.array.shape[1]), pf.array.dtype) if done else _gather(pf.array, idx)
    y = np.zeros(0, np.int64) if done else labels[idx].astype(np.int64)
    with TrainProgress(f"{bb.name} {layer} head · {ds.name}/{tr}", enabled=show and not done) as prog:
        fit = fit_head(
            x, y, n_classes + 1, o.head, seed=o.seed, trunk=trunk, out_dir=out_dir, key=key, device=device,
            progress=prog, on_epoch=on_epoch,
        )
    if not fit.reused:
        from ..features.store import atomic_write_bytes

        info = {
            "key": key, "features": pf.key, "layer": layer, "node": node, "settings": o.settings(), "counts": counts,
            "history": fit.history, "stopped": fit.stopped, "resumed_from": fit.resumed_from, "seconds": fit.seconds,
            "n_train_patches": int(len(idx)), "input_dim": int(pf.array.shape[1]),
        }
        atomic_write_bytes(out_dir / "train.json", (json.dumps(info, indent=1) + "\n").encode())
    return TrainedTransfer(fit, key, out_dir, pf.key, layer, node, bb, tr, counts, int(len(idx)))


def _workers(o: TransferOptions) -> int:
    """Patch-cutting processes: ``--workers``, else half the cores (at least one) running alongside the model."""
    from ..features.extract import cores

    return max(1, cores() // 2) if o.workers is None else o.workers


# -- evaluate ---------------------------------------------------------------------------------------------------
def evaluate(
    model: str,
    dataset: Any,
    *,
    opts: TransferOptions | None = None,
    card: Mapping[str, Any] | None = None,
    train_split: str | None = None,
    test_split: str | None = None,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    label: str | None = None,
    maps: str | os.PathLike[str] | None = None,
    maps_limit: int = 20,
    ctx: Any = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train (or reload) the head, score the test split (mean of p^k over patches), append a VOC07-AP record.

    Args:
        opts: the settings (default: the card's).
        card: the protocol card the run is compared with (default: ``tasks/oquab2014.yaml``); deviations recorded.
        maps: a folder for localisation maps (PNG) of the first ``maps_limit`` test images, for each class present
            in the image and the image's top-scoring class.

    Returns:
        The record (also appended to ``results``, default ``results/records.jsonl``).
    """
    from ..metrics import compute
    from ..results.records import append_record, new_record
    from ..runner import train_test_splits
    from .features import extract_patch_features, resolve_device

    crd = card if card is not None else load_card()
    o = opts or options_from_card(crd)
    c = _context(ctx, store)
    show = c.progress if progress is None else progress
    ds = c.dataset(dataset)
    tr, te = train_test_splits(ds, train_split, test_split)
    if te not in ds.labels:
        raise DatasetError(f"{ds.name}/{te} has no published labels; score it on the official server or pick another --test-split")
    t = train(model, ds, opts=o, train_split=tr, ctx=c, progress=show)
    pf = extract_patch_features(
        t.backbone, ds, te, c.store, layer=t.layer, node=t.node, grid=o.grid, precision=o.precision, dtype=o.dtype,
        batch_size=o.extract_batch, workers=_workers(o), shard_size=o.shard_size, on_bad_image=o.on_bad_image,
        device=o.device, compile=o.compile, progress=show,
    )
    n_classes = len(ds.classes)
    probs = predict_proba(t.model, pf.array, device=resolve_device(o.device))
    scores = aggregate_scores(probs[:, :n_classes], pf.image_index, len(pf.ids), k=o.k)
    valid = pf.valid & ~np.isnan(scores).any(axis=1)
    y = ds.labels[te]
    # the benchmark's own AP (datasets.yaml): VOC2007's 11-point, VOC2010+'s area; the other one goes into extra
    metric = ds.meta.get("metric") if ds.meta.get("metric") in ("voc07_map", "voc_area_map") else "voc07_map"
    res = compute(metric, scores=scores[valid], labels=y[valid])
    dev = deviations(o, crd)
    bb = t.backbone
    written = []
    if maps is not None and maps_limit > 0:
        written = write_maps(maps, ds, te, pf, probs, scores, y, limit=maps_limit)
    rec = new_record(
        dataset=ds.name,
        task="multilabel",
        protocol="oquab2014-transfer",
        backbone=bb.name,
        weights=bb.weights_id,
        layer=t.layer,
        node=t.node,
        preprocess={**bb.preprocess.to_dict(), "mode": "square", "note": "each patch resized to the input square"},
        precision=o.precision,
        metric=metric,
        value=float(res.value),
        per_class={n: (None if np.isnan(v) else float(v)) for n, v in zip(ds.classes, res.per_item, strict=True)},
        extra={k: float(v) for k, v in res.extra.items()},
        label=label if label is not None else (CARD_NAME + ("-U" if o.head.finetune_fc67 else "")),
        card={"name": crd.get("name", CARD_NAME), "hash": card_hash(crd), "deviations": dev},
        split=te,
        train_split=tr,
        settings=o.settings(),
        seed=o.seed,
        feature_keys={"train": t.feature_key, "test": pf.key},
        head={
            "key": t.key,
            "file": str(t.path / "head.pt"),
            "reused": t.reused,
            "epochs": len(t.fit.history),
            "stopped": t.fit.stopped,
            "final_lr": t.fit.history[-1]["lr"] if t.fit.history else None,
            "final_loss": t.fit.history[-1]["loss"] if t.fit.history else None,
        },
        training_patches=t.counts,
        n_train=len(ds.samples(tr)),
        n_train_patches=t.n_train_patches,
        n_test=int(valid.sum()),
        n_test_patches=int(len(pf.patches)),
        n_skipped=int((~pf.valid).sum()),
        maps=[str(p) for p in written],
    )
    append_record(rec, results or c.results)
    return rec


def write_maps(
    out: str | os.PathLike[str],
    ds: Any,
    split: str,
    pf: Any,
    probs: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None,
    *,
    limit: int = 20,
    classes: Sequence[str] | None = None,
) -> list[Path]:
    """Localisation PNGs ``<out>/<image id>_<class>.png`` for the first ``limit`` readable images of ``split``.

    Classes drawn per image: ``classes`` if given, else those present in the image (label 1) plus its top-scoring
    class.
    """
    from ..images import load_rgb

    out_dir = Path(out)
    off = pf.offsets
    samples = ds.samples(split)
    written: list[Path] = []
    done = 0
    for i, s in enumerate(samples):
        if done >= limit:
            break
        if not pf.valid[i] or off[i] == off[i + 1]:
            continue
        if classes is not None:
            cls_idx = [ds.classes.index(cn) for cn in classes]
        else:
            present = list(np.flatnonzero(labels[i] == 1)) if labels is not None else []
            cls_idx = list(dict.fromkeys([*present, int(np.nanargmax(scores[i]))]))
        img = load_rgb(s.path)
        a, b = int(off[i]), int(off[i + 1])
        for ci in cls_idx:
            heat = localisation_map(pf.boxes[a:b], probs[a:b, ci], img.size)
            name = f"{_safe(s.id)}_{ds.classes[ci]}.png"
            title = f"{s.id}  {ds.classes[ci]}  image score {scores[i, ci]:.3g}"
            written.append(save_map_png(out_dir / name, img, heat, title=title))
        done += 1
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# -- the card as a whole ----------------------------------------------------------------------------------------
def run_card(
    card: str | os.PathLike[str] | Mapping[str, Any] = CARD_NAME,
    *,
    model: str | None = None,
    datasets: Sequence[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    ctx: Any = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Run every dataset of a transfer card (``cnnbase run tasks/oquab2014.yaml``); absent datasets are skipped
    with a line each. ``overrides`` are option names as in :func:`options_from_card` (recorded as deviations)."""
    from ..cli._console import err_console

    crd = load_card(card) if not isinstance(card, Mapping) else dict(card)
    o = options_from_card(crd, **overrides)
    c = _context(ctx, store)
    names = list(datasets or crd.get("datasets", {}) or [])
    out = []
    for name in names:
        spec = (crd.get("datasets") or {}).get(name) or {}
        try:
            ds = c.dataset(name)
        except DatasetError as exc:
            err_console.print(f"[yellow]skipped[/] {name}: {exc}")
            continue
        out.append(
            evaluate(
                model or crd.get("model", "alexnet"), ds, opts=o, card=crd, train_split=spec.get("train_split"),
                test_split=spec.get("test_split"), results=results, ctx=c,
            )
        )
    return out


__all__ = [
    "CARD_NAME",
    "OQUAB_SCALES",
    "GridSpec",
    "HeadOptions",
    "LabelRules",
    "TrainedTransfer",
    "TransferOptions",
    "aggregate_scores",
    "deviations",
    "evaluate",
    "label_patches",
    "load_card",
    "localisation_map",
    "options_from_card",
    "patch_grid",
    "run_card",
    "save_map_png",
    "subsample_background",
    "train",
]
