"""The extraction engine: decode in worker processes, run one forward pass for every requested tap, write shards.

Work is split into shards of ``shard_size`` samples. A shard is computed only if its file is missing or fails its
checksum, so a killed run resumes where it stopped and ends with the same bytes as an uninterrupted one
(inference is deterministic for a fixed batch composition: batches never straddle a shard boundary).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.models.feature_extraction import create_feature_extractor

from ..backbones import LoadedBackbone, Preprocess
from ..datasets.base import Sample
from ..errors import BadImageError, CnnbaseError, ConfigError
from .store import StoreEntry
from .views import JitterSpec, make_views, normalize_batch

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _ViewsDataset(Dataset):
    """Sample index → (index, uint8 views) or (index, reason) for a bad image."""

    def __init__(self, samples: Sequence[Sample], preprocess: Preprocess, jitter: JitterSpec) -> None:
        self.samples, self.preprocess, self.jitter = samples, preprocess, jitter

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        from ..images import load_rgb

        s = self.samples[i]
        try:
            img = load_rgb(s.path, box=s.box)
        except BadImageError as exc:
            return i, exc.reason
        return i, make_views(img, self.preprocess, self.jitter)


def _collate(items):  # type: ignore[no-untyped-def]
    return items


class ShardBatches:
    """Batch sampler over the pending shards' indices; a batch never spans two shards."""

    def __init__(self, shards: list[range], batch_size: int) -> None:
        self.shards, self.batch_size = shards, batch_size

    def __iter__(self):  # type: ignore[no-untyped-def]
        for r in self.shards:
            for start in range(r.start, r.stop, self.batch_size):
                yield list(range(start, min(start + self.batch_size, r.stop)))

    def __len__(self) -> int:
        return sum((len(r) + self.batch_size - 1) // self.batch_size for r in self.shards)


@dataclass
class Tap:
    """One requested layer: its alias, graph node and the store entry it fills."""

    name: str
    node: str
    entry: StoreEntry


class ModelRunner:
    """One forward pass → every tap, flattened (or globally pooled) to ``(N, d)`` float32 numpy arrays."""

    def __init__(
        self,
        bb: LoadedBackbone,
        nodes: dict[str, str],
        *,
        precision: str = "fp32",
        pool: str = "none",
        channels_last: bool = True,
        compile: bool = False,
        device: str = "cpu",
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
        if pool not in ("none", "avg", "max"):
            raise ConfigError(f"unknown pooling {pool!r}; choose none, avg or max")
        self.dtype, self.pool, self.device, self.preprocess = PRECISIONS[precision], pool, torch.device(device), bb.preprocess
        gm = create_feature_extractor(bb.model, return_nodes={node: name for name, node in nodes.items()})
        gm.eval()  # create_feature_extractor copies may come back in training mode
        gm = gm.to(self.device)
        if self.dtype != torch.float32:
            gm = gm.to(self.dtype)  # casting the weights beats autocast on CPU (PERF.md)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            gm = gm.to(memory_format=torch.channels_last)
        self.dims = self._probe_dims(gm, bb.preprocess.crop)
        self.model = torch.compile(gm) if compile else gm
        self.compiled = compile

    @torch.inference_mode()
    def _probe_dims(self, gm: torch.nn.Module, size: int) -> dict[str, int]:
        x = torch.zeros(1, 3, size, size, dtype=self.dtype, device=self.device).contiguous(memory_format=self.memory_format)
        out = gm(x)
        return {name: (y.shape[1] if y.ndim == 4 and self.pool != "none" else int(np.prod(y.shape[1:]))) for name, y in out.items()}

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        x = normalize_batch(x.to(self.device, non_blocking=True), self.preprocess, self.dtype)
        x = x.contiguous(memory_format=self.memory_format)
        out = self.model(x)
        result = {}
        for name, y in out.items():
            if y.ndim == 4 and self.pool != "none":
                y = y.float().amax(dim=(2, 3)) if self.pool == "max" else y.float().mean(dim=(2, 3))
            result[name] = y.reshape(y.shape[0], -1).float().cpu().numpy()
        return result


def default_workers() -> int:
    """Decode workers sized to the cores: half of them, at least one (the model uses the rest)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def run_extraction(
    runner: ModelRunner,
    samples: Sequence[Sample],
    taps: list[Tap],
    *,
    jitter: JitterSpec,
    shard_size: int,
    batch_size: int,
    workers: int,
    storage_dtype: np.dtype,
    on_bad_image: str,
    progress=None,  # type: ignore[no-untyped-def]
) -> int:
    """Compute every missing shard for all ``taps``; returns the number of images processed now."""
    n = len(samples)
    n_shards = max(1, (n + shard_size - 1) // shard_size)
    shard_ranges = [range(i * shard_size, min(n, (i + 1) * shard_size)) for i in range(n_shards)]
    pending = [r for i, r in enumerate(shard_ranges) if not all(t.entry.shard_ok(i, len(r)) for t in taps)]
    if progress is not None:
        progress.advance(n - sum(len(r) for r in pending), skip=True)
    if not pending:
        return 0
    ds = _ViewsDataset(samples, runner.preprocess, jitter)
    loader = DataLoader(
        ds,
        batch_sampler=ShardBatches(pending, batch_size),
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=runner.device.type == "cuda",
    )
    views = jitter.views
    shard_iter = iter(pending)
    current = next(shard_iter)
    arrays = {t.name: np.full((len(current), views, runner.dims[t.name]), np.nan, np.float32) for t in taps}
    skipped: list[dict] = []
    filled = done = 0
    for items in loader:
        good = [(i, v) for i, v in items if not isinstance(v, str)]
        bad = [(i, v) for i, v in items if isinstance(v, str)]
        if bad and on_bad_image == "fail":
            raise _bad_images_error(samples, bad, start=items[-1][0] + 1, workers=workers)
        skipped.extend({"index": i, "id": samples[i].id, "reason": r} for i, r in bad)
        if good:
            feats = runner(torch.cat([v for _, v in good]))  # (B*views, 3, H, W) → {tap: (B*views, d)}
            rows = [i - current.start for i, _ in good]
            for t in taps:
                arrays[t.name][rows] = feats[t.name].reshape(len(good), views, -1)
        filled += len(items)
        done += len(items)
        if progress is not None:
            progress.advance(len(items))
        if filled == len(current):
            for t in taps:
                arr = arrays[t.name][:, 0] if views == 1 else arrays[t.name]
                t.entry.write_shard(current.start // shard_size, arr.astype(storage_dtype), skipped)
            skipped, filled = [], 0
            current = next(shard_iter, None)  # type: ignore[arg-type]
            if current is not None:
                arrays = {t.name: np.full((len(current), views, runner.dims[t.name]), np.nan, np.float32) for t in taps}
    return done


def _bad_images_error(samples: Sequence[Sample], bad, *, start: int, workers: int) -> CnnbaseError:  # type: ignore[no-untyped-def]
    """Every bad image of the run (not only the first), found by scanning the rest without the model."""
    from ..images import scan_images

    rest = scan_images([s.path for s in samples[start:]], workers=max(1, workers))
    listing = [(str(samples[i].path), r) for i, r in bad] + list(rest)
    shown = "; ".join(f"{p}: {r}" for p, r in listing[:20])
    more = f" (+{len(listing) - 20} more)" if len(listing) > 20 else ""
    return CnnbaseError(
        f"{len(listing)} bad image(s): {shown}{more}; fix or remove them, or rerun with --on-bad-image skip "
        "(skipped samples are recorded in the manifest and every result)"
    )
