"""Frozen-layer activations of every patch, cached in the feature store (one decode per image for all its patches).

Every patch of every image of a split is run through the transferred layers once (not only the patches a training
run keeps), so training the head again with other labelling rules, another background sample, other
hyper-parameters or another seed never recomputes features. The store entry is keyed like any other (backbone,
weights identity, graph node, patch preprocessing, precision, storage dtype, dataset, split, ordered sample list)
plus the patch grid; its folder holds, besides the usual ``manifest.json`` and ``features.npy``:

* ``features.npy``: ``(N_patches, d)``, the patches of all images one after another, in :func:`patch_grid` order;
* ``patches.npy``: int32 ``(N_patches, 6)``: image index, ``x0, y0, x1, y1`` (pixels), scale index;
* ``images.npy``: float64 ``(n_images, 3)``: width, height and the grid step fraction of each image.

Images are read with :func:`cnnbase.images.load_rgb` (one decode each, in worker processes); each patch is cropped
and resized to the network's input square in one Pillow call (``Image.resize(..., box=patch)``, antialiased),
then normalised with the backbone's mean and std on the batch. Rows are written straight into a preallocated,
memory-mapped ``.features.partial.npy`` in blocks of ``shard_size`` images; each finished block leaves a checksum
marker, so an interrupted extraction resumes at the first block without a valid marker, and the finished file is
renamed into place (one copy on disk, never in memory: VOC07 ``trainval`` at fc7 is ~2.5M × 4096 values).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..backbones import LoadedBackbone
from ..datasets.base import ImageSet, Sample
from ..errors import BadImageError, CnnbaseError, ConfigError, StoreError
from ..features.extract import join_views, quiet_worker, resolve_device
from ..features.store import FeatureStore, StoreEntry, atomic_save_npy, file_sha256
from .patches import GridSpec, patch_grid
from .progress import ExtractProgress

KIND = "oquab2014-patches"
FINETUNE_LAYER = "classifier_input"

_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def frozen_layer(bb: LoadedBackbone, layer: str | None, *, finetune_fc67: bool = False) -> tuple[str, str]:
    """(layer name, graph node) of the last frozen layer.

    Default: ``fc7`` when the backbone has it (AlexNet/VGG, after ReLU), else its ``pool`` vector. With
    ``finetune_fc67`` (the paper's "U" variant) FC6 and FC7 are trained too, so the frozen part ends at the input
    of the classifier (AlexNet: the flattened pool5 map, 9216-d).
    """
    if finetune_fc67:
        if layer not in (None, FINETUNE_LAYER):
            raise ConfigError("--finetune-fc67 trains FC6 and FC7, so the frozen layers end at the classifier input; drop --layer")
        finetune_trunk(bb)  # validates the architecture
        return FINETUNE_LAYER, "flatten"
    name = layer or ("fc7" if "fc7" in bb.taps else "pool")
    tap = bb.resolve_layer(name)
    return tap.name, tap.node


def finetune_trunk(bb: LoadedBackbone) -> torch.nn.Sequential:
    """A trainable copy of FC6 → FC7 (with their ReLUs and dropouts) of an AlexNet/VGG-style classifier."""
    import copy

    model = bb.model
    cls = getattr(model, "classifier", None)
    if bb.spec.family not in ("alexnet", "vgg") or not isinstance(cls, torch.nn.Sequential) or "fc7" not in bb.taps:
        raise ConfigError(
            f"--finetune-fc67 (the paper's 'U' variant) needs an AlexNet/VGG-style classifier with FC6 and FC7; {bb.name} has none"
        )
    if "flatten" not in bb.graph_nodes:
        raise ConfigError(f"{bb.name}: cannot find the classifier input (graph node 'flatten') for --finetune-fc67")
    end = int(bb.taps["fc7"].node.split(".")[-1]) + 1
    return copy.deepcopy(cls[:end])


@dataclass
class PatchFeatures:
    """The patch activations of one split, read back from the store.

    Attributes:
        array: ``(N_patches, d)``, memory-mapped.
        patches: int32 ``(N_patches, 6)``: image index, x0, y0, x1, y1, scale index.
        images: float64 ``(n, 3)``: width, height, step fraction.
        ids: the split's sample ids.
        valid: bool ``(n,)``; False for images skipped as unreadable.
        key: the store key; ``path``: the entry's folder; ``reused``: nothing was computed now.
    """

    array: np.ndarray
    patches: np.ndarray
    images: np.ndarray
    ids: list[str]
    valid: np.ndarray
    key: str
    path: Path
    manifest: dict[str, Any]
    reused: bool = False

    @property
    def image_index(self) -> np.ndarray:
        return self.patches[:, 0]

    @property
    def boxes(self) -> np.ndarray:
        return self.patches[:, 1:5]

    @property
    def offsets(self) -> np.ndarray:
        counts = np.bincount(self.image_index, minlength=len(self.ids))
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def patch_fields(
    bb: LoadedBackbone, layer: str, node: str, ds: ImageSet, split: str, grid: GridSpec, precision: str, dtype: str
) -> dict[str, Any]:
    """The store-key fields of one split's patch activations."""
    return {
        "kind": KIND,
        "backbone": bb.name,
        "weights": bb.weights_id,
        "layer": layer,
        "node": node,
        "patch_input": {**bb.preprocess.to_dict(), "mode": "square", "resize": bb.preprocess.crop, "crop_resize": "PIL box resize"},
        "grid": grid.to_dict(),
        "precision": precision,
        "dtype": dtype,
        "dataset": ds.name,
        "split": split,
        "samples": ds.split_hash(split),
    }


def image_sizes(samples: Sequence[Sample], on_bad_image: str) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(width, height) per sample from the file header (no decode); unreadable headers → (0, 0) and a reason."""
    from ..images import load_rgb

    sizes = np.zeros((len(samples), 2), dtype=np.int64)
    bad: list[tuple[int, str]] = []
    for i, s in enumerate(samples):
        try:
            if s.box is not None:
                raise ConfigError(f"sample {s.id} carries a crop box; patch extraction works on whole images")
            with Image.open(s.path) as im:
                sizes[i] = im.size
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - the full decode policy says why
            try:
                im2 = load_rgb(s.path)
                sizes[i] = im2.size
            except BadImageError as exc:
                bad.append((i, exc.reason))
    if bad and on_bad_image == "fail":
        shown = "; ".join(f"{samples[i].path}: {r}" for i, r in bad[:20])
        more = f" (+{len(bad) - 20} more)" if len(bad) > 20 else ""
        raise CnnbaseError(
            f"{len(bad)} bad image(s): {shown}{more}; fix or remove them, or rerun with --on-bad-image skip "
            "(skipped images are recorded in the manifest and every result)"
        )
    return sizes, bad


def build_grid(sizes: np.ndarray, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """``patches`` int32 (N, 6) and ``images`` float64 (n, 3) for every image (0 patches for a (0, 0) size)."""
    rows, images = [], np.zeros((len(sizes), 3), dtype=np.float64)
    for i, (w, h) in enumerate(sizes):
        if w < 1 or h < 1:
            continue
        boxes, scale, f = patch_grid(int(w), int(h), grid)
        images[i] = (w, h, f)
        rows.append(np.column_stack([np.full(len(boxes), i), boxes, scale]).astype(np.int32))
    patches = np.concatenate(rows) if rows else np.zeros((0, 6), np.int32)
    return patches, images


class _PatchDataset(torch.utils.data.Dataset):
    """Image index → (index, uint8 NHWC patches, n) or (index, reason): one decode, all its patches."""

    def __init__(self, samples: Sequence[Sample], boxes: list[np.ndarray], size: int, interpolation: str) -> None:
        self.samples, self.boxes, self.size = samples, boxes, size
        self.resample = _RESAMPLE[interpolation]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        from ..images import load_rgb

        try:
            img = load_rgb(self.samples[i].path)
        except BadImageError as exc:
            return i, exc.reason
        return i, crop_patches(img, self.boxes[i], self.size, self.resample)


def crop_patches(img: Image.Image, boxes: np.ndarray, size: int, resample: int = Image.BILINEAR) -> torch.Tensor:
    """uint8 ``(P, 3, size, size)`` (channels-last strides) of each box of ``img`` resized to ``size`` × ``size``."""
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        out[k] = np.asarray(img.resize((size, size), resample=resample, box=(int(x0), int(y0), int(x1), int(y1))))
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _collate(items):  # type: ignore[no-untyped-def]
    return items


def extract_patch_features(
    bb: LoadedBackbone,
    ds: ImageSet,
    split: str,
    store: FeatureStore,
    *,
    layer: str,
    node: str,
    grid: GridSpec,
    precision: str = "fp32",
    dtype: str = "float16",
    batch_size: int = 256,
    workers: int = 0,
    shard_size: int = 16,
    on_bad_image: str = "fail",
    device: str | None = "auto",
    channels_last: bool = True,
    compile: bool = False,
    progress: bool = True,
) -> PatchFeatures:
    """The patch activations of ``split`` at ``node``: read from the store, or computed (resumably) and stored."""
    from ..features.extract import ModelRunner

    if dtype not in ("float32", "float16"):
        raise ConfigError(f"unknown storage dtype {dtype!r}; choose float32 or float16")
    if on_bad_image not in ("fail", "skip"):
        raise ConfigError(f"unknown --on-bad-image {on_bad_image!r}; choose fail or skip")
    if shard_size < 1 or batch_size < 1:
        raise ConfigError("shard size and batch size must be positive")
    fields = patch_fields(bb, layer, node, ds, split, grid, precision, dtype)
    entry = store.entry(fields)
    if entry.complete:
        return _load(entry, reused=True)
    samples = ds.samples(split)
    with entry.lock():
        if entry.complete:
            return _load(entry, reused=True)
        sizes, bad_headers = image_sizes(samples, on_bad_image)
        patches, images = build_grid(sizes, grid)
        entry.path.mkdir(parents=True, exist_ok=True)
        _write_or_check(entry.path / "patches.npy", patches)
        _write_or_check(entry.path / "images.npy", images)
        runner = ModelRunner(
            bb, {layer: node}, precision=precision, pool="none", channels_last=channels_last, compile=compile,
            device=resolve_device(device),
        )
        dim = runner.dims[layer]
        entry.begin([s.id for s in samples], shard_size, {"views": 1, "n_patches": int(len(patches)), "dim": int(dim)})
        counts = np.bincount(patches[:, 0], minlength=len(samples)) if len(patches) else np.zeros(len(samples), np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_shards = max(1, -(-len(samples) // shard_size))
        ranges = [range(k * shard_size, min(len(samples), (k + 1) * shard_size)) for k in range(n_shards)]
        block = _BlockFile(entry, int(len(patches)), int(dim), np.dtype(dtype))
        pending = [(k, r) for k, r in enumerate(ranges) if not block.ok(k, int(offsets[r.start]), int(offsets[r.stop]))]
        boxes = [patches[offsets[i] : offsets[i + 1], 1:5] for i in range(len(samples))]
        header_bad = dict(bad_headers)
        desc = f"{bb.name} {layer} patches · {ds.name}/{split}"
        with ExtractProgress(desc, len(samples), enabled=progress) as prog:
            prog.advance(len(samples) - sum(len(r) for _, r in pending), skip=True)
            _run_shards(
                runner, block, samples, boxes, offsets, pending, layer, dim, batch_size, workers,
                on_bad_image, header_bad, bb.preprocess.crop, bb.preprocess.interpolation, prog,
            )
        from ..results.records import versions

        block.finalize(n_shards, {"versions": versions()})
    return _load(entry, reused=False)


def _run_shards(  # type: ignore[no-untyped-def]
    runner, block: _BlockFile, samples, boxes, offsets, pending, layer, dim, batch_size, workers,
    on_bad_image, header_bad, size, interpolation, prog,
) -> None:
    if not pending:
        return
    todo = [i for _, r in pending for i in r]
    ds = _PatchDataset(samples, boxes, size, interpolation)
    loader = torch.utils.data.DataLoader(
        ds,
        sampler=todo,
        batch_size=1,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=quiet_worker if workers > 0 else None,
        pin_memory=runner.device.type == "cuda",
    )
    it = iter(loader)
    for k, r in pending:
        start, stop = int(offsets[r.start]), int(offsets[r.stop])
        out = np.full((stop - start, dim), np.nan, dtype=np.float32)
        skipped: list[dict[str, Any]] = []
        queue: list[tuple[int, torch.Tensor]] = []  # (row offset in the shard, an image's patches)
        queued = 0
        for i in r:
            if i in header_bad:
                skipped.append({"index": i, "id": samples[i].id, "reason": header_bad[i]})
                next(it)  # the loader still visits it (zero patches)
                prog.advance(1, 0)
                continue
            (j, item), = next(it)
            assert j == i
            if isinstance(item, str):
                if on_bad_image == "fail":
                    raise CnnbaseError(
                        f"bad image {samples[i].path}: {item}; fix or remove it, or rerun with --on-bad-image skip"
                    )
                skipped.append({"index": i, "id": samples[i].id, "reason": item})
                prog.advance(1, 0)
                continue
            if len(item):
                queue.append((int(offsets[i]) - start, item))
                queued += len(item)
            if queued >= batch_size:
                _flush(runner, queue, out, layer, batch_size)
                queue, queued = [], 0
            prog.advance(1, len(item))
        _flush(runner, queue, out, layer, batch_size)
        block.write(k, start, out, skipped)


def _flush(runner, queue: list[tuple[int, torch.Tensor]], out: np.ndarray, layer: str, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    """Run the queued patches (several images) through the frozen layers, ``batch_size`` at a time, into ``out``."""
    if not queue:
        return
    x = join_views([t for _, t in queue])  # one numpy copy of the channels-last blocks (torch.cat copied element-wise)
    rows = np.concatenate([np.arange(o, o + len(t)) for o, t in queue])
    for a in range(0, len(x), batch_size):
        out[rows[a : a + batch_size]] = runner(x[a : a + batch_size])[layer]


def _write_or_check(path: Path, array: np.ndarray) -> None:
    if path.is_file():
        try:
            old = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            old = None
        if old is not None and old.shape == array.shape and np.array_equal(old, array):
            return
        if old is not None:
            raise StoreError(f"{path} differs from the grid computed now (images changed on disk?); delete {path.parent} to recompute")
    atomic_save_npy(path, array)


class _BlockFile:
    """The entry's ``features.npy`` while it is being filled: ``.features.partial.npy``, preallocated and
    memory-mapped, written block by block (one block = one shard of images). After each block, a marker
    ``shards/<k>.json`` with the block's sha256 and skipped images is written atomically; a block counts as done
    only when its marker exists and its rows still hash to it. Finishing fsyncs and renames the file into place,
    so the features are written once and the disk holds one copy (VOC07 trainval at fc7 in float16: ~20 GB)."""

    def __init__(self, entry: StoreEntry, rows: int, dim: int, dtype: np.dtype) -> None:
        self.entry, self.rows, self.dim, self.dtype = entry, rows, dim, dtype
        self.path = entry.path / ".features.partial.npy"
        (entry.path / "shards").mkdir(parents=True, exist_ok=True)
        mm = None
        if self.path.is_file():
            try:
                mm = np.load(self.path, mmap_mode="r+", allow_pickle=False)
            except (OSError, ValueError):
                mm = None
            if mm is not None and (mm.shape != (rows, dim) or mm.dtype != dtype):
                mm = None
        if mm is None:
            for old in (entry.path / "shards").glob("*.json"):
                old.unlink()
            mm = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=(rows, dim))
        self.mm = mm

    def _marker(self, k: int) -> Path:
        return self.entry.path / "shards" / f"{k:05d}.json"

    def ok(self, k: int, start: int, stop: int) -> bool:
        try:
            meta = json.loads(self._marker(k).read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if meta.get("rows") != [start, stop]:
            return False
        return hashlib.sha256(np.ascontiguousarray(self.mm[start:stop]).tobytes()).hexdigest() == meta.get("sha256")

    def write(self, k: int, start: int, block: np.ndarray, skipped: list[dict[str, Any]]) -> None:
        from ..features.store import atomic_write_bytes

        data = block.astype(self.dtype)
        self.mm[start : start + len(data)] = data
        self.mm.flush()
        meta = {"rows": [start, start + len(data)], "sha256": hashlib.sha256(data.tobytes()).hexdigest(), "skipped": skipped}
        atomic_write_bytes(self._marker(k), json.dumps(meta).encode())

    def finalize(self, n_shards: int, extra: dict[str, Any]) -> None:
        """Every block done → fsync, rename to ``features.npy``, complete the manifest, remove the markers."""
        entry = self.entry
        m = entry.manifest()
        assert m is not None
        skipped: list[dict[str, Any]] = []
        for k in range(n_shards):
            try:
                skipped.extend(json.loads(self._marker(k).read_text())["skipped"])
            except (OSError, json.JSONDecodeError, KeyError):
                raise StoreError(f"{entry.path}: block {k} has no marker; rerun to compute it") from None
        self.mm.flush()
        del self.mm
        with open(self.path, "rb+") as f:
            os.fsync(f.fileno())
        digest = file_sha256(self.path)
        final = entry.path / "features.npy"
        os.replace(self.path, final)
        m.update(extra)
        m.update(
            status="complete",
            shape=[self.rows, self.dim],
            dtype=str(np.dtype(self.dtype)),
            sha256=digest,
            skipped=skipped,
            bytes=final.stat().st_size,
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        entry.write_manifest(m)
        shutil.rmtree(entry.path / "shards", ignore_errors=True)


def _load(entry: StoreEntry, *, reused: bool) -> PatchFeatures:
    f = entry.load(mmap=True)
    try:
        patches = np.load(entry.path / "patches.npy", allow_pickle=False)
        images = np.load(entry.path / "images.npy", allow_pickle=False)
    except (OSError, ValueError):
        raise StoreError(f"{entry.path}: patches.npy or images.npy missing or unreadable; delete the folder to recompute") from None
    if len(patches) != len(f.array):
        raise StoreError(f"{entry.path}: {len(patches)} patch boxes but {len(f.array)} feature rows; delete the folder to recompute")
    return PatchFeatures(
        array=f.array, patches=patches, images=images, ids=f.ids, valid=f.valid, key=entry.key, path=entry.path,
        manifest=f.manifest, reused=reused,
    )
