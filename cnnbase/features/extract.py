"""The extraction engine: decode (taking turns with the model, or in worker processes), run one forward pass for every
requested tap, write shards.

Work is split into shards of ``shard_size`` samples. A shard is computed only if its file is missing or fails its
checksum, so a killed run resumes where it stopped and ends with the same bytes as an uninterrupted one
(inference is deterministic for a fixed batch composition: batches never straddle a shard boundary).
"""

from __future__ import annotations

import copy
import functools
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

# The fast path is kept only when, on a sample of the run's own images, every tap of it agrees with fp32 this well.
# Why these (scripts/bench_precision.py, 64-image probes; full table in docs/PRECISION.md):
# - min cosine 0.999: faithful bf16 features measured 0.9996-0.99999 (AlexNet, ResNet-50 with random and partly
#   calibrated batch norm; median relative error 0.45-1.1%); the calibrated ResNet-50 of PERF.md, whose bf16 features
#   lose two thirds of their top-1 neighbours, 0.992-0.994 (relative error 9%).
# - 10-NN overlap 0.90 and top-1 neighbour kept 0.75: faithful features kept 0.97-1.0 / 0.94-1.0 on photos and
#   labelled textures, and 0.94-0.95 / 0.81-0.86 on generated smooth random fields (near-duplicate images: their neighbours
#   are ties that any 0.5% change reorders); the calibrated ResNet-50 keeps 0.84 / 0.66 on 64 photos.
# Where all three passed, a linear SVM's mAP and a retrieval mAP moved by at most 0.10 points.
PROBE_THRESHOLDS = {"min_cosine": 0.999, "knn10_overlap": 0.90, "top1_agreement": 0.75}
PROBE_IMAGES = 64


class _ViewsDataset(Dataset):
    """Sample index → (index, uint8 views) or (index, reason) for a bad image."""

    def __init__(self, samples: Sequence[Sample], preprocess: Preprocess, jitter: JitterSpec) -> None:
        self.samples, self.preprocess, self.jitter = samples, preprocess, jitter

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, i: int):  # type: ignore[no-untyped-def]
        """Sample ``i`` decoded (its box cropped): a PIL RGB image, or the reason it is a bad image."""
        from ..images import load_rgb

        s = self.samples[i]
        try:
            return load_rgb(s.path, box=s.box)
        except BadImageError as exc:
            return exc.reason

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        img = self.decode(i)
        return i, img if isinstance(img, str) else make_views(img, self.preprocess, self.jitter)


def join_views(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """One ``(N, 3, H, W)`` uint8 batch from view stacks, as one numpy copy (torch's uint8 cat is slow when two
    threads compete for the cores), in the views' channels-last memory (:func:`~cnnbase.features.views.stack_hwc`)."""
    return torch.from_numpy(np.concatenate([v.permute(0, 2, 3, 1).numpy() for v in views])).permute(0, 3, 1, 2)


def quiet_worker(_worker_id: int) -> None:
    """A decode worker's start: SIGTERM is left to the main process, which turns it into an orderly stop (the
    workers are shut down with the loader). A scheduler's kill reaches the whole process group; a worker killed by it
    first made torch print a worker-death traceback above the resume hint."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _collate(items, normalize: tuple[Preprocess, torch.dtype, bool] | None = None):  # type: ignore[no-untyped-def]
    """In the worker: one batch tensor (one shared-memory block to pass, not one per image) + bad images.

    uint8 by default; with ``normalize = (preprocess, dtype, channels_last)`` the worker also normalises the batch
    into the model's dtype and memory format, taking that work off the process that runs the model.
    """
    good = [(i, v) for i, v in items if not isinstance(v, str)]
    bad = [(i, v) for i, v in items if isinstance(v, str)]
    x = join_views([v for _, v in good]) if good else None
    if x is not None and normalize is not None:
        pre, dtype, channels_last = normalize
        x = normalize_batch(x, pre, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
    return [i for i, _ in items], [i for i, _ in good], x, bad


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
        if self.device.type == "cuda" and self.dtype == torch.float32:
            # torch lets cuDNN convolutions run in TF32 (10-bit mantissa) by default: fp32 features must be fp32
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        gm = create_feature_extractor(bb.model, return_nodes={node: name for name, node in nodes.items()})
        if self.dtype != torch.float32 or self.device.type != "cpu":
            # the extractor shares its parameters with bb.model: cast a copy, never the caller's model; each floating
            # tensor is copied straight into the target dtype and device (not copied in fp32 first, then cast)
            memo: dict[int, object] = {}
            for t in (*gm.parameters(), *gm.buffers()):
                if t.is_floating_point() and id(t) not in memo:
                    c = t.detach().to(self.device, self.dtype, copy=True)
                    memo[id(t)] = torch.nn.Parameter(c, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else c
            gm = copy.deepcopy(gm, memo)
        gm.eval()  # create_feature_extractor and deepcopy can return modules in training mode (PERF.md)
        gm = gm.to(self.device)
        if self.dtype != torch.float32:
            gm = gm.to(self.dtype)  # casting the weights beats autocast on CPU (PERF.md)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            gm = gm.to(memory_format=torch.channels_last)
        self.dims = self._probe_dims(gm, bb.preprocess.crop)
        self._eager = self.model = gm
        self.compiled = False
        if compile:
            self.enable_compile()

    def enable_compile(self) -> None:
        """Compile the model (done lazily, on the next batch; a failed compile falls back to eager in ``__call__``)."""
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants: what made compiled CPU inference fast (PERF.md)
        self.model, self.compiled = torch.compile(self._eager, dynamic=False), True

    def disable_compile(self) -> None:
        """Back to the eager model (the one the precision probe checked)."""
        self.model, self.compiled = self._eager, False

    @torch.inference_mode()
    def _probe_dims(self, gm: torch.nn.Module, size: int) -> dict[str, int]:
        x = torch.zeros(1, 3, size, size, dtype=self.dtype, device=self.device).contiguous(memory_format=self.memory_format)
        out = gm(x)
        return {name: (y.shape[1] if y.ndim == 4 and self.pool != "none" else int(np.prod(y.shape[1:]))) for name, y in out.items()}

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, *, pad_to: int | None = None) -> dict[str, np.ndarray]:
        n = x.shape[0]
        # The model always gets an ordinary tensor, never an inference tensor, whichever path prepared the batch (the
        # decode threads' normalised ones are ordinary, this method's own would not be): a compiled model guards on
        # the difference and would compile a second time.
        with torch.inference_mode(False):
            if x.is_inference():
                x = x.clone()
            if pad_to and n < pad_to:  # a compiled model would recompile for a smaller last batch: pad it
                x = torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:]))])
            x = x.to(self.device, non_blocking=True)
            if x.dtype == torch.uint8:  # else already normalised where it was decoded (see _collate)
                x = normalize_batch(x, self.preprocess, self.dtype)
            x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
        try:
            out = self.model(x)
        except Exception as exc:  # torch.compile needs a working C++ toolchain; eager gives the same numbers
            if not self.compiled:
                raise
            from ..cli._console import err_console

            err_console.print(f"[yellow]compile failed[/] ({type(exc).__name__}); continuing without --compile")
            self.disable_compile()
            out = self.model(x)
        result = {}
        for name, y in out.items():
            y = y[:n]
            if y.ndim == 4 and self.pool != "none":
                y = y.float().amax(dim=(2, 3)) if self.pool == "max" else y.float().mean(dim=(2, 3))
            result[name] = y.reshape(y.shape[0], -1).float().cpu().numpy()
        return result


def resolve_device(device: str | None) -> str:
    """``auto``/None → ``cuda`` when torch sees a CUDA device, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` as given,
    checked (a one-line error names the fix)."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: torch sees no CUDA device here; use --device cpu (or auto)")
        if device != "cuda" and int(device[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
        return device
    raise ConfigError(f"unknown --device {device!r}; choose auto, cpu, cuda or cuda:N")


def cpu_bf16_units() -> list[str]:
    """This CPU's native bf16 units, as torch reports them: ``amx_tile`` and/or ``avx512_bf16``."""
    cpu = getattr(torch, "cpu", None)
    return [u for u in ("amx_tile", "avx512_bf16") if getattr(cpu, f"_is_{u}_supported", lambda: False)()]


def compute_kind(device: str = "cpu") -> str:
    """What computes on ``device``, as far as low-precision numbers depend on it: the GPU's name, or the CPU's
    instruction set with its bf16 units (AMX tiles and AVX512-BF16 accumulate differently). Keys the precision probe,
    so a store shared between machines never lends one machine's verdict to another."""
    if device.startswith("cuda"):
        return "cuda:" + torch.cuda.get_device_name(device)
    return "cpu:" + "+".join([torch.backends.cpu.get_cpu_capability(), *cpu_bf16_units()])


def fast_precision(device: str = "cpu") -> str:
    """The fastest precision worth probing on ``device``: bf16 where the hardware has it natively, else fp32."""
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_bf16_units() else "fp32"


def probe_sample(n: int, k: int = PROBE_IMAGES) -> list[int]:
    """Evenly spread sample indices (deterministic: the same run probes the same images)."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, num=min(n, k))}) if n else []


def fidelity(ref: np.ndarray, fast: np.ndarray) -> dict[str, float]:
    """How far ``fast`` features are from ``ref`` (rows = images): cosine, relative error, neighbour agreement."""
    ref, fast = ref.astype(np.float64), fast.astype(np.float64)
    nr, nf = np.linalg.norm(ref, axis=1), np.linalg.norm(fast, axis=1)
    ok = (nr > 0) & (nf > 0)
    cos = (ref * fast).sum(1)[ok] / (nr[ok] * nf[ok])
    rel = np.linalg.norm(ref - fast, axis=1)[ok] / nr[ok]
    out = {"images": int(len(ref)), "min_cosine": float(cos.min()) if len(cos) else 1.0, "median_rel_error": float(np.median(rel)) if len(rel) else 0.0}
    n = len(ref)
    if n >= 3:
        def neighbours(x: np.ndarray) -> np.ndarray:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            d = -(x @ x.T)
            np.fill_diagonal(d, np.inf)
            return np.argsort(d, axis=1, kind="stable")

        k = min(10, n - 1)
        a, b = neighbours(ref)[:, :k], neighbours(fast)[:, :k]
        out["knn10_overlap"] = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))
        out["top1_agreement"] = float(np.mean(a[:, 0] == b[:, 0]))
    else:
        out["knn10_overlap"] = out["top1_agreement"] = 1.0
    return out


def passes(fig: dict[str, float], thresholds: dict[str, float] | None = None) -> bool:
    """Whether every figure of ``fig`` reaches its threshold (default: the module's :data:`PROBE_THRESHOLDS`)."""
    return all(fig.get(k, 0.0) >= v for k, v in (PROBE_THRESHOLDS if thresholds is None else thresholds).items())


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# Decoding in this process between forward passes (:func:`phased_batches`) takes turns with the model: each runs on
# every core, alone. AlexNet bf16 on 2 cores (host B) streamed at 1.0-1.08 times n / (decode + model) as the plan
# times them, 1.2x a decode worker running alongside a 2-thread model (the worker deschedules a model thread, and the
# other waits for it at every synchronisation: 0.75 of that rate); ResNet-50 as fast as with the worker (decoding is
# 2-4% of its time). Measured on 2 cores only: on many cores the part of each decode that holds the GIL (the Python
# around Pillow) may count for more, hence the margin below 1.
PHASED_EFFICIENCY = 0.9
# A split that gives the model its own cores is predicted from a short timing, which flatters one thread: ResNet-50
# bf16 timed 45 core-ms per image on one thread over 8 images but streamed at 64 (15.6 img/s on 1 worker + 1 thread,
# against 21.3 on 1 + 2). Such a split must be predicted this much faster to be chosen (AlexNet: 1.17-1.23x; ResNet-50
# 1.08x).
OWN_SPLIT_MARGIN = 1.1


def split_for(n: int, decode_s: float, model_core_s: float, model_1thread_s: float | None = None) -> tuple[int, int, float]:
    """(decode workers, torch threads, predicted images/s) for ``n`` cores, from the cost of one image.

    ``decode_s``: seconds one core spends decoding and preprocessing an image; ``model_core_s``: core-seconds the
    network spends on it on ``n`` threads; ``model_1thread_s``: the same on one thread (often less: no
    synchronisation), used for the splits that give the model one thread. Candidates: no worker, decoding in this
    process on every core in turns with the model (:func:`phased_batches`): ``n / (decode + model)`` times
    :data:`PHASED_EFFICIENCY`; and every split of the cores between workers and threads, each side on its own cores:
    the slower side's rate divided by :data:`OWN_SPLIT_MARGIN`. Ties go to fewer workers.
    """
    n = max(1, n)
    best = (0, n, PHASED_EFFICIENCY * n / (decode_s + model_core_s))
    for w in range(1, n):
        per_core = model_1thread_s if (n - w == 1 and model_1thread_s) else model_core_s
        if (own := min(w / decode_s, (n - w) / per_core) / OWN_SPLIT_MARGIN) > best[2] * 1.0001:
            best = (w, n - w, own)
    return best


def plan_cpu_split(runner: ModelRunner, samples: Sequence[Sample], jitter: JitterSpec, batch: int) -> tuple[int, int, dict]:
    """(decode workers, torch threads) for this run on the CPU, from timing a few decodes and forward passes.

    Decoding and the model share the cores (:func:`split_for` chooses). Measured on 2 cores: where decoding costs
    about as much as the bf16 model (AlexNet on an Intel AMX host) 1 worker + 1 thread, each on its own core, ran
    best of the worker splits; where the model costs 5-27 times the decode (AlexNet on an AMD EPYC host, ResNet-50 on
    both), decoding in turns with a 2-thread model (docs/SPEED.md).
    """
    import time

    n = cores()
    ds = _ViewsDataset(samples, runner.preprocess, jitter)
    probe = list(range(min(len(samples), 6)))
    if probe:
        ds[probe[0]]  # untimed: the first call pays the imports
    t = time.perf_counter()
    views = [v for i in probe[1:] if not isinstance(v := ds[i][1], str)]
    decode = (time.perf_counter() - t) / max(1, len(probe) - 1)
    if not views:
        return max(1, n // 2), torch.get_num_threads(), {}
    # timed on a few images, so that timing costs little of a small run (a compiled model at the run's batch size:
    # its warm-up compiles it for that shape)
    size = max(1, batch if runner.compiled else min(batch, 8))
    x = join_views(views)
    x = x.repeat(size // len(x) + 1, 1, 1, 1)[:size]
    runner(x)  # warm-up (compiles, when compiling)

    def seconds(threads: int) -> float:  # one forward pass of x on ``threads`` threads
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            t = time.perf_counter()
            runner(x)
            return time.perf_counter() - t
        finally:
            torch.set_num_threads(before)

    # a compiled model compiles again for another thread count: timed on the run's count only
    counts = [torch.get_num_threads()] + ([1] if n >= 2 and torch.get_num_threads() > 1 and not runner.compiled else [])
    if len(counts) > 1:
        seconds(1)  # a new thread count builds new kernels on its first call: keep that out of the timing
    best = dict.fromkeys(counts, float("inf"))
    for _ in range(2):  # the faster of two, the counts interleaved: a slow spell of a shared machine hits both
        for k in counts:
            best[k] = min(best[k], seconds(k))
    core_s = {k: best[k] / len(x) * jitter.views * k for k in counts}  # core-seconds per image
    model, model_1 = core_s[counts[0]], (core_s[1] if len(counts) > 1 else None)
    workers, threads, rate = split_for(n, decode, model, model_1)
    return workers, threads, {
        "decode_ms_per_image": round(1000 * decode, 2),
        "model_core_ms_per_image": round(1000 * model, 2),
        "model_core_ms_per_image_1_thread": None if model_1 is None else round(1000 * model_1, 2),
        "model_compiled": runner.compiled,
        "predicted_images_per_s": round(rate, 1),
    }


# The CPU plan (:func:`plan_cpu_split`) costs 0.3 s (AlexNet) to 1.8 s (ResNet-50, compiled) on 2 cores, and no split
# can beat decoding in turns with the model (the default without a plan) by much: neither exceeds
# n / (decode + model) but for a model cheaper per core on fewer threads. Below this many network inputs (about 6 s of
# AlexNet and 30 s of ResNet-50 on host B) the plan would not repay its cost.
PLAN_MIN_INPUTS = 1000


def default_workers(device: str = "cpu") -> int:
    """Decode workers when no plan ran: none on the CPU (decoding takes turns with the model on every core, and a
    short run pays no process start-up), half the cores on a GPU (decoding ahead of it)."""
    return 0 if device == "cpu" else max(1, cores() // 2)


def phased_batches(ds: _ViewsDataset, batches, threads: int, normalize=None):  # type: ignore[no-untyped-def]
    """What a DataLoader over ``ds`` with ``batches`` yields, decoded in this process while the model waits.

    Each batch is cut into ``threads`` contiguous parts; each part is decoded and collated (normalised, with
    ``normalize``) by a pool thread (Pillow and torch release the GIL), and the parts are joined in order. The model
    then runs on every core with nothing competing for them: no decode process descheduling its threads, and no
    process start-up. The batches are those of the DataLoader, tensor for tensor (:func:`_collate` per part).
    """
    from concurrent.futures import ThreadPoolExecutor

    def part(idx: list[int]):  # type: ignore[no-untyped-def]
        return _collate([ds[i] for i in idx], normalize)

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="cnnbase-decode") as pool:
        for batch in batches:
            k = max(1, min(threads, len(batch)))
            cuts = [len(batch) * j // k for j in range(k + 1)]
            parts = list(pool.map(part, [batch[a:b] for a, b in zip(cuts, cuts[1:])]))
            xs = [x for _, _, x, _ in parts if x is not None]
            yield (
                [i for p in parts for i in p[0]],
                [i for p in parts for i in p[1]],
                (xs[0] if len(xs) == 1 else torch.cat(xs)) if xs else None,
                [b for p in parts for b in p[3]],
            )


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
    views = jitter.views
    per_batch = max(1, batch_size // views)  # batch_size counts network inputs: 16 jitter views are 16 inputs
    # on the CPU the batch is normalised where it is decoded (a worker has cores to itself; in this process the pool
    # threads do it); a GPU gets uint8 (4x less to copy)
    norm = (runner.preprocess, runner.dtype, runner.memory_format == torch.channels_last) if runner.device.type == "cpu" else None
    sampler = ShardBatches(pending, per_batch)
    if workers > 0:
        loader = DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=functools.partial(_collate, normalize=norm),
            persistent_workers=False,
            prefetch_factor=4,
            worker_init_fn=quiet_worker,
            pin_memory=runner.device.type == "cuda",
        )
    else:
        loader = phased_batches(ds, sampler, torch.get_num_threads(), norm)
    shard_iter = iter(pending)
    current = next(shard_iter)
    arrays = {t.name: np.full((len(current), views, runner.dims[t.name]), np.nan, np.float32) for t in taps}
    skipped: list[dict] = []
    filled = done = 0
    for items, good, x, bad in loader:
        if bad and on_bad_image == "fail":
            raise _bad_images_error(samples, bad, start=items[-1] + 1, workers=workers)
        skipped.extend({"index": i, "id": samples[i].id, "reason": r} for i, r in bad)
        if good:
            feats = runner(x, pad_to=per_batch * views if runner.compiled else None)  # x: (B*views, 3, H, W)
            rows = [i - current.start for i in good]
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
