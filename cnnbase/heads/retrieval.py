"""Instance-retrieval head: exact L2 ranking over databases larger than RAM, PCA-whitening, spatial search.

What Razavian et al. (CVPRW 2014, §3.6 / Table 7) do, and where each step lives here:

* **CNN**: L2-normalised first-FC features ranked by L2 distance → :func:`l2_normalize`, :func:`rank`.
* **CNNaug**: L2 → PCA to 500-d + whitening (Jégou & Chum, ECCV 2012) → L2 → signed power 2 → L2
  → :class:`PCAWhitening`, :func:`augment_pipeline`, :func:`signed_power`.
* **-ss** (spatial search): every image is described by the features of multi-level overlapping sub-patches
  (:func:`spatial_boxes`), each extracted from the smallest square containing it (:func:`square_box`); the
  distance between two images is the mean over query patches of the min over reference patches of the L2
  distance (:func:`spatial_search_distance`), then :func:`rank_distances`.

Conventions shared by every function here:

* Features may be float16, float32 or float64 numpy arrays (``np.memmap`` included, e.g. the feature store's
  ``features.npy`` opened with ``mmap_mode="r"``) or torch tensors (bfloat16 too); they are converted to float32
  one block at a time and all arithmetic is float32. Element-wise functions return the kind they were given
  (numpy → numpy float32, torch → torch float32 on the same device).
* Distances are Euclidean (``‖q − x‖``, not squared), computed as ``sqrt(max(‖q‖² − 2 q·x + ‖x‖², 0))``. Near
  zero this expansion has an absolute error of about ``sqrt(1e-7 · (‖q‖² + ‖x‖²))`` ≈ 5e-4 for unit vectors;
  the ranking of distinct candidates farther apart than that is exact.
* Candidates are ordered by the float32 score ``‖x‖² − 2 q·x``; the query's constant ``‖q‖²`` is added to the
  kept values only (it cannot change the order, and skipping it saves a pass over every score tile). Database
  norms are ``vector_norm(x)²`` (one pass, within ~2 ulp of the sum of squares; equal for identical vectors).
* **Ties** (exactly equal float32 scores) are broken by the **lower database index**, in every mode (full
  ranking, top-k, any block size), so results are deterministic. Two identical database vectors usually get
  bitwise-equal scores, but a BLAS may round them differently in the last bit depending on where they fall in
  a block; only exact float equality counts as a tie.
* **Excluding the query itself**: :func:`rank` and :func:`rank_distances` take ``exclude`` (one database index
  per query) and remove that item from the ranking, so the metrics need not. Use it where the protocol drops
  the query from its own result list: Holidays (the official ``holidays_map.py`` ignores the query image).
  Do not use it for UKBench (the query counts as one of its four) nor for Oxford/Paris (queries are scored
  with the official good/ok/junk lists). The adapters' ``queries[i]["self"]`` is the index to pass.
"""

from __future__ import annotations

import math
import mmap
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CnnbaseError, ConfigError

__all__ = [
    "PCAWhitening",
    "augment_pipeline",
    "l2_normalize",
    "rank",
    "rank_distances",
    "signed_power",
    "spatial_boxes",
    "spatial_search_distance",
    "square_box",
]

# Working-set targets for the blocked loops (bytes). A 64 MiB float32 database block makes the matrix product
# large enough to run at full speed (PERF.md: 4096-d search is bound by the product on 2 cores); score tiles are
# kept at 16 MiB. Big buffers are allocated once per call and reused (_Scratch): a fresh 64 MiB tensor per block
# costs page faults comparable to the arithmetic itself (measured: fp16→fp32 block conversion 4x slower when
# freshly allocated). Few, large ops per block: on a busy machine each parallel op also waits for its threads.
_BLOCK_BYTES = 64 * 2**20
_TILE_BYTES = 16 * 2**20

_FLOAT_NUMPY = (np.float16, np.float32, np.float64)
_FLOAT_TORCH = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_PCAW_FORMAT = "cnnbase.pcawhitening"
_PCAW_VERSION = 1


# ----------------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------------
def _resolve_device(device: str | torch.device | None, *arrays: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _check_float(a: Any, name: str) -> Any:
    """Return ``a`` as a float numpy array or torch tensor (no copy for arrays/tensors); reject other dtypes."""
    if isinstance(a, torch.Tensor):
        if a.dtype not in _FLOAT_TORCH:
            raise ConfigError(f"{name} has dtype {a.dtype}; expected a float tensor (float16/bfloat16/32/64)")
        return a
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
        if a.dtype.kind in "iub":  # Python lists of ints: accept, as float32
            a = a.astype(np.float32)
    if a.dtype.type not in _FLOAT_NUMPY:
        raise ConfigError(
            f"{name} has dtype {a.dtype}; expected float16, float32 or float64 "
            "(bfloat16 stored as uint16 is not supported: convert it to float16/float32 first)"
        )
    return a


def _to_f32(a: Any, device: torch.device) -> torch.Tensor:
    """A float numpy array / tensor (any float dtype) → float32 tensor on ``device``; copies only if needed."""
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=torch.float32)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    a = np.ascontiguousarray(a)
    with warnings.catch_warnings():
        # read-only memmaps: the tensor aliases them, and nothing here writes into its inputs
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(a)
    # move first (float16 travels at half the bytes), then widen on the device
    return t.to(device=device).to(dtype=torch.float32)


def _like(out: torch.Tensor, like: Any) -> Any:
    """Return ``out`` as the kind of ``like``: a torch tensor stays a tensor, anything else becomes numpy."""
    if isinstance(like, torch.Tensor):
        return out
    return out.cpu().numpy()


def _release_pages(block: Any) -> None:
    """Drop the resident pages of a slice of a shared ``np.memmap`` from this process (best effort).

    Streaming a file through a memory map leaves every page it touched in the process's resident set until the
    kernel reclaims it, so an 8 GB scan *looks* like an 8 GB process. ``MADV_DONTNEED`` on a shared, file-backed
    mapping only unmaps: the data stays in the file and the page cache and is re-read on the next access, so
    this never changes results. Private (copy-on-write, ``mode="c"``) maps are skipped, since there it would
    discard in-memory edits.
    """
    mm = getattr(block, "_mmap", None)
    if mm is None or getattr(block, "mode", "c") not in ("r", "r+", "w+") or not hasattr(mm, "madvise"):
        return
    if not isinstance(block, np.ndarray) or not block.flags.c_contiguous or block.nbytes == 0:
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        rel = block.ctypes.data - base
        start = rel - rel % mmap.PAGESIZE
        length = rel + block.nbytes - start
        if start < 0 or start + length > len(mm):
            return
        mm.madvise(mmap.MADV_DONTNEED, start, length)
    except (AttributeError, BufferError, OSError, TypeError, ValueError):
        return


class _Scratch:
    """Float32 work buffers on one device, allocated on first use and reused across blocks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, *shape: int) -> torch.Tensor:
        numel = int(np.prod(shape, dtype=np.int64))
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=torch.float32, device=self.device)
            self._bufs[name] = buf
        return buf[:numel].view(*shape)


class _Items:
    """A float array of items along axis 0 (an (n, d) database or (n, P, d) patch sets), read block by block."""

    def __init__(self, data: Any, name: str, ndim: int) -> None:
        data = _check_float(data, name)
        if data.ndim != ndim:
            shape = "(n, d)" if ndim == 2 else "(n, patches, d)"
            raise ConfigError(f"{name} must be a {ndim}-D array {shape}; got shape {tuple(data.shape)}")
        self.data = data
        self.name = name
        self.n = int(data.shape[0])
        self.item_shape = tuple(int(s) for s in data.shape[1:])
        self.d = self.item_shape[-1]
        self.rows_per_item = int(np.prod(self.item_shape[:-1], dtype=np.int64)) if ndim > 2 else 1

    def default_block(self) -> int:
        return max(1, _BLOCK_BYTES // max(1, 4 * self.d * self.rows_per_item))

    def blocks(self, block_items: int, scratch: _Scratch) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first item index, float32 (items·rows_per_item, d) tensor)`` per block.

        The tensor is a reused buffer (or an alias of float32 input): valid until the next block only.
        """
        dev = scratch.device
        for s in range(0, self.n, block_items):
            e = min(self.n, s + block_items)
            raw = self.data[s:e]  # a memmap slice stays a memmap (needed by _release_pages below)
            if isinstance(raw, torch.Tensor):
                src = raw
            else:
                arr = raw if raw.dtype.isnative else raw.astype(raw.dtype.newbyteorder("="))
                arr = np.ascontiguousarray(arr)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # read-only memmap: aliased, never written
                    src = torch.from_numpy(arr)
                del arr
            src = src.reshape(-1, self.d)
            if src.dtype == torch.float32 and src.device == dev:
                x = src
            else:
                if src.device != dev:
                    src = src.to(dev)  # in the stored dtype: float16 crosses at half the bytes
                x = scratch.get("block", src.shape[0], self.d)
                x.copy_(src)
            yield s, x
            del x, src
            _release_pages(raw)


def _row_sqnorms(
    x: torch.Tensor, name: str, first_item: int, rows_per_item: int, fast: bool = False
) -> torch.Tensor:
    """‖x_i‖² per row; raises on NaN/inf (a NaN would otherwise sort arbitrarily).

    ``fast`` (database blocks): ``vector_norm(x)²``, one pass over the block with no temporary, within ~2 ulp of
    the sum of squares (identical vectors still get identical values). Measured per 4096 × 4096 block: 4 ms
    against 8–30 ms for an exact ``sum(x·x)``, as much as the matrix product itself for 100 queries.
    """
    sq = torch.linalg.vector_norm(x, dim=1).square_() if fast else (x * x).sum(dim=1)
    if not bool(torch.isfinite(sq).all()):
        bad = int((~torch.isfinite(sq)).nonzero()[0, 0]) // rows_per_item + first_item
        raise CnnbaseError(
            f"{name} item {bad} contains NaN/inf (or values too large for float32); "
            "the features are corrupt: re-extract them or drop that item"
        )
    return sq


def _check_block_arg(value: int | None, name: str) -> None:
    if value is not None and (
        not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1
    ):
        raise ConfigError(f"{name} must be a positive integer or None; got {value!r}")


def _check_exclude(exclude: Any, nq: int, n: int) -> torch.Tensor | None:
    if exclude is None:
        return None
    ex = np.asarray(exclude)
    if ex.shape != (nq,) or ex.dtype.kind not in "iu":
        raise ConfigError(
            f"exclude must be an integer array of shape ({nq},) (one database index per query); got {ex.dtype} {ex.shape}"
        )
    if nq and (ex.min() < 0 or ex.max() >= n):
        raise ConfigError(
            f"exclude holds indices outside [0, {n}): each query must name one database item to drop"
        )
    return torch.from_numpy(ex.astype(np.int64))


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**62


# ----------------------------------------------------------------------------------------------------------
# element-wise transforms
# ----------------------------------------------------------------------------------------------------------
def l2_normalize(X: Any, eps: float = 1e-12) -> Any:
    """Scale every vector (along the last axis) to unit L2 norm; all-zero vectors stay zero.

    Computes ``x / max(‖x‖, eps)`` in float32 (float16 inputs are widened first). Not streamed: the result is
    materialised in memory (normalise features when they are extracted, not on a whole memmapped store).

    Args:
        X: array of shape ``(..., d)``: numpy (memmap too) or torch.
        eps: floor on the norm, so that zero vectors give zero rather than NaN.

    Returns:
        float32 array of the same shape: numpy for numpy input, torch (same device) for torch input.

    Example:
        >>> import numpy as np
        >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float16))
        array([[0.6, 0.8],
               [0. , 0. ]], dtype=float32)
    """
    X = _check_float(X, "X")
    t = _to_f32(X, _resolve_device(None, X))
    norms = torch.linalg.vector_norm(t, dim=-1, keepdim=True).clamp_min(eps)
    return _like(t / norms, X)


def signed_power(X: Any, alpha: float) -> Any:
    """Signed element-wise power ``sign(x)·|x|^alpha`` (Razavian's CNNaug uses ``alpha = 2`` after L2).

    Args:
        X: array of any shape: numpy or torch, any float dtype.
        alpha: exponent, > 0 (``0.5`` is the usual "power normalisation"; the paper uses 2).

    Returns:
        float32 array of the same shape and kind.

    Example:
        >>> import numpy as np
        >>> signed_power(np.array([-3.0, 0.5, 0.0]), 2.0)
        array([-9.  ,  0.25,  0.  ], dtype=float32)
    """
    if (
        not isinstance(alpha, (int, float, np.number))
        or isinstance(alpha, bool)
        or not (0 < alpha < math.inf)
    ):
        raise ConfigError(f"alpha must be a finite number > 0; got {alpha!r}")
    X = _check_float(X, "X")
    t = _to_f32(X, _resolve_device(None, X))
    return _like(torch.sign(t) * t.abs().pow(float(alpha)), X)


# ----------------------------------------------------------------------------------------------------------
# ranking
# ----------------------------------------------------------------------------------------------------------
def _block_topk(D: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries per row of ``D`` with ties at the cut resolved to the lowest column.

    ``torch.topk`` picks arbitrarily among values equal to the k-th smallest. Taking k+1 values tells whether
    such a tie straddles the cut (the (k+1)-th smallest equals the k-th) without another pass over ``D``; only
    those rows are redone exactly (every entry below the k-th value, then the first equal ones by column).
    Returned pairs are in no particular order.
    """
    rows, nb = D.shape
    if k >= nb:
        return D.clone(), torch.arange(nb, device=D.device).expand(rows, nb).clone()
    vals1, idx1 = torch.topk(D, k + 1, dim=1, largest=False, sorted=False)
    kth1 = vals1.amax(dim=1)  # the (k+1)-th smallest
    # drop it (small tensors from here on)
    vals, pos = torch.topk(vals1, k, dim=1, largest=False, sorted=False)
    idx = idx1.gather(1, pos)
    kth = vals.amax(dim=1, keepdim=True)  # the k-th smallest
    straddle = kth.squeeze(1) == kth1
    if bool(straddle.any()):
        sel = straddle.nonzero().squeeze(1)
        Dr, kr = D[sel], kth[sel]
        lt = Dr < kr
        eq = Dr == kr
        need = k - lt.sum(dim=1, keepdim=True)
        take = lt | (eq & (eq.cumsum(dim=1) <= need))
        cols = take.nonzero()[:, 1].view(len(sel), k)  # row-major: columns ascending within each row
        idx[sel] = cols
        vals[sel] = Dr.gather(1, cols)
    return vals, idx


def _merge(
    run_v: torch.Tensor | None, run_i: torch.Tensor | None, v: torch.Tensor, i: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge block candidates (v, i) into the running top-k, ordered by (distance, index).

    Invariant: the running list is sorted by (distance, index) and every block index exceeds every running one,
    so after sorting the block candidates by index, one stable sort on distance yields (distance, index) order.
    """
    i, o = torch.sort(i, dim=1)
    v = v.gather(1, o)
    if run_v is not None:
        v = torch.cat([run_v, v], dim=1)
        i = torch.cat([run_i, i], dim=1)
    v, o = torch.sort(v, dim=1, stable=True)
    i = i.gather(1, o)
    return v[:, :k].contiguous(), i[:, :k].contiguous()


def rank(
    queries: Any,
    database: Any,
    *,
    topk: int | None = None,
    block_size: int | None = None,
    query_batch: int | None = None,
    exclude: Any = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank database items by L2 distance to each query (exact search, database streamed in blocks).

    The database is read once, ``block_size`` rows at a time (a float16 ``np.memmap`` larger than RAM is fine);
    each block is widened to float32, scored against the queries (``query_batch`` at a time) with
    ``‖q‖² − 2 q·x + ‖x‖²`` and, with ``topk``, reduced by ``torch.topk`` and merged into a running top-k, so
    memory is O(block + queries·topk) whatever the database size. Resident pages of a memmapped database are
    released after each block, so the process stays small (the OS page cache may still hold the file).

    Ties (equal float32 scores) go to the lower database index, in every mode and for any block size.

    Args:
        queries: ``(nq, d)`` float array (numpy or torch; float16 allowed).
        database: ``(n_db, d)`` float array; a numpy memmap is streamed, never loaded whole.
        topk: number of neighbours to return per query (clipped to the number of candidates). ``None`` ranks the
            whole database: needs ``nq × n_db × 16`` bytes of RAM; raises :class:`ConfigError` if that is not
            available.
        block_size: database rows per block (default: 64 MiB of float32, e.g. 4096 rows at d=4096).
        query_batch: queries scored together against a block (default: a 16 MiB score tile).
        exclude: optional ``(nq,)`` int array, one database index per query to remove from its ranking (the
            query itself when it is also in the database; see the module docstring for which protocols want
            it). Every query must name one valid index; the ranking then has ``n_db − 1`` candidates.
        device: torch device for the arithmetic (default: the queries' device if a tensor, else CPU). Database
            blocks are moved there in their stored dtype and widened on the device.

    Returns:
        ``(indices, distances)``: int64 ``(nq, k)`` database indices, nearest first, and float32 ``(nq, k)``
        Euclidean distances (not squared), with ``k = topk`` clipped to the candidate count, or all of them.

    Raises:
        ConfigError: bad shapes, dtypes, ``topk``/``block_size``/``exclude`` values, or a full ranking that would
            not fit in memory.
        CnnbaseError: a query or database item containing NaN/inf.

    Example:
        >>> import numpy as np
        >>> db = np.array([[0, 0], [1, 0], [0, 3], [1, 0]], dtype=np.float16)
        >>> idx, dist = rank(np.array([[0.9, 0.0]]), db, topk=3, block_size=2)
        >>> idx
        array([[1, 3, 0]])
        >>> dist.round(3)
        array([[0.1, 0.1, 0.9]], dtype=float32)
    """
    _check_block_arg(block_size, "block_size")
    _check_block_arg(query_batch, "query_batch")
    if topk is not None and (not isinstance(topk, (int, np.integer)) or isinstance(topk, bool) or topk < 1):
        raise ConfigError(f"topk must be a positive integer or None (full ranking); got {topk!r}")
    dev = _resolve_device(device, queries)
    Qa = _check_float(queries, "queries")
    if Qa.ndim != 2:
        raise ConfigError(f"queries must be a 2-D array (nq, d); got shape {tuple(Qa.shape)}")
    db = _Items(database, "database", ndim=2)
    nq, n = int(Qa.shape[0]), db.n
    if Qa.shape[1] != db.d:
        raise ConfigError(
            f"queries are {Qa.shape[1]}-d but the database is {db.d}-d: use features of the same layer"
        )
    if n == 0:
        raise ConfigError("the database is empty")
    ex = _check_exclude(exclude, nq, n)
    n_cand = n - (1 if ex is not None else 0)
    if n_cand < 1:
        raise ConfigError("nothing to rank: the database has one item and it is excluded")
    full = topk is None
    k = n_cand if full else min(int(topk), n_cand)
    if nq == 0:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)

    Q = _to_f32(Qa, dev)
    qn = _row_sqnorms(Q, "queries", 0, 1)
    nb = block_size or db.default_block()
    qb = query_batch or max(1, min(nq, _TILE_BYTES // (4 * min(nb, n))))
    ex_dev = ex.to(dev) if ex is not None else None

    sort_batch = max(1, min(nq, _TILE_BYTES * 4 // (12 * n)))  # rows sorted at once in a full ranking
    if full:
        need = nq * n * 4 + nq * n_cand * 12 + 2 * sort_batch * n * 12
        if need > 0.8 * _mem_available():
            raise ConfigError(
                f"a full ranking of {nq} queries × {n} database items needs ~{need / 2**30:.1f} GiB; "
                "pass topk=... (e.g. 100) or rank fewer queries at a time"
            )
        D_all = torch.empty((nq, n), dtype=torch.float32)
    run_v: list[torch.Tensor | None] = [None] * math.ceil(nq / qb)
    run_i: list[torch.Tensor | None] = [None] * math.ceil(nq / qb)

    scratch = _Scratch(dev)
    for start, X in db.blocks(nb, scratch):
        xn = _row_sqnorms(X, "database", start, 1, fast=True)
        stop = start + X.shape[0]
        for b, qs in enumerate(range(0, nq, qb)):
            qe = min(nq, qs + qb)
            # score = ‖x‖² − 2 q·x; the per-query constant ‖q‖² is added to the kept values only
            D = torch.addmm(
                xn.unsqueeze(0),
                Q[qs:qe],
                X.T,
                beta=1.0,
                alpha=-2.0,
                out=scratch.get("tile", qe - qs, X.shape[0]),
            )
            if ex_dev is not None:
                e = ex_dev[qs:qe]
                hit = ((e >= start) & (e < stop)).nonzero().squeeze(1)
                if hit.numel():
                    D[hit, e[hit] - start] = math.inf
            if full:
                D_all[qs:qe, start:stop] = D.cpu()
            else:
                v, i = _block_topk(D, min(k, D.shape[1]))
                run_v[b], run_i[b] = _merge(run_v[b], run_i[b], v, i + start, k)

    if full:
        idx_out = np.empty((nq, k), np.int64)
        dist_out = np.empty((nq, k), np.float32)
        # an excluded item was set to +inf above and sorts last (all other distances are finite): cut off here
        for qs in range(0, nq, sort_batch):
            qe = min(nq, qs + sort_batch)
            v, i = torch.sort(D_all[qs:qe], dim=1, stable=True)
            idx_out[qs:qe] = i[:, :k].numpy()
            dist_out[qs:qe] = v[:, :k].add_(qn[qs:qe, None].cpu()).clamp_min_(0.0).sqrt_().numpy()
        return idx_out, dist_out
    vals = torch.cat([v for v in run_v if v is not None]).add_(qn[:, None]).clamp_min_(0.0).sqrt_()
    inds = torch.cat([i for i in run_i if i is not None])
    return inds.cpu().numpy(), vals.cpu().numpy()


def rank_distances(
    distances: Any, *, topk: int | None = None, exclude: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rank a precomputed ``(nq, n_db)`` distance matrix (e.g. from :func:`spatial_search_distance`).

    Same contract as :func:`rank`: ascending distance, ties to the lower database index, optional ``exclude``.

    Args:
        distances: ``(nq, n_db)`` float array (smaller = closer); NaN is rejected.
        topk: neighbours per query (clipped to the candidate count); ``None`` for the full ranking.
        exclude: optional ``(nq,)`` int array of one database index per query to drop.

    Returns:
        ``(indices int64 (nq, k), distances float32 (nq, k))``.

    Example:
        >>> import numpy as np
        >>> rank_distances(np.array([[0.5, 0.2, 0.5, 0.1]]), topk=3, exclude=np.array([3]))[0]
        array([[1, 0, 2]])
    """
    if topk is not None and (not isinstance(topk, (int, np.integer)) or isinstance(topk, bool) or topk < 1):
        raise ConfigError(f"topk must be a positive integer or None (full ranking); got {topk!r}")
    Da = _check_float(distances, "distances")
    if Da.ndim != 2 or Da.shape[1] == 0:
        raise ConfigError(
            f"distances must be a 2-D (nq, n_db) array with n_db ≥ 1; got shape {tuple(Da.shape)}"
        )
    nq, n = int(Da.shape[0]), int(Da.shape[1])
    ex = _check_exclude(exclude, nq, n)
    n_cand = n - (1 if ex is not None else 0)
    if n_cand < 1:
        raise ConfigError("nothing to rank: one database item and it is excluded")
    k = n_cand if topk is None else min(int(topk), n_cand)
    if nq == 0:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    D = _to_f32(Da, torch.device("cpu"))
    if bool(torch.isnan(D).any()):
        raise CnnbaseError("distances contain NaN; recompute them from finite features")
    # rank one extra candidate, then drop the excluded item (or the extra one when it is not among them):
    # robust even when the matrix holds +inf
    kk = min(n, k + (1 if ex is not None else 0))
    if kk == n:
        v, i = torch.sort(D, dim=1, stable=True)
    else:
        v, i = _block_topk(D, kk)
        v, i = _merge(None, None, v, i, kk)
    if ex is not None:
        keep = i != ex[:, None]
        keep[keep.all(dim=1), -1] = False
        i, v = i[keep].view(nq, kk - 1), v[keep].view(nq, kk - 1)
    return i[:, :k].numpy(), v[:, :k].numpy()


# ----------------------------------------------------------------------------------------------------------
# PCA-whitening and the CNNaug pipeline
# ----------------------------------------------------------------------------------------------------------
class PCAWhitening:
    """PCA projection with optional whitening, learned on one set and applied to another (Jégou & Chum 2012).

    ``transform(x) = diag(1/sqrt(λ + eps)) · E^T (x − μ)`` where ``μ`` is the training mean and ``E``, ``λ`` are the
    top ``dim`` eigenvectors and eigenvalues of the training covariance (``1/(n−1)`` normalisation). Without
    whitening the division is skipped. The fit is float64 and streamed in blocks (a memmap is fine); transforms
    are float32. Eigenvector signs are fixed (largest-magnitude coordinate positive), so refits are identical.
    Cost of a fit: ``n·d²`` float64 multiply-adds plus a ``d × d`` eigendecomposition (measured on the 2-core
    machine: ≈3 s per 10k vectors at d = 4096, and 13 s for the eigendecomposition).

    Which set to learn it on is not stated by Razavian et al.; fit it on data disjoint from the evaluated
    database (common practice: Paris6k for Oxford5k and vice versa) and record that choice with the results.

    Attributes:
        mean_: ``(d,)`` float64 training mean.
        components_: ``(dim, d)`` float64 principal axes, one per row, by decreasing eigenvalue.
        explained_variance_: ``(dim,)`` float64 eigenvalues λ (variance along each axis).
        explained_variance_ratio_: ``(dim,)`` λ divided by the total training variance.
        whiten_: whether ``transform`` divides by ``sqrt(λ + eps)``.
        eps_: the regulariser used.
        n_samples_: number of training vectors.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> pcaw = PCAWhitening().fit(rng.normal(size=(200, 16)), dim=4)
        >>> pcaw.transform(rng.normal(size=(3, 16)).astype(np.float16)).shape
        (3, 4)
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.explained_variance_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None
        self.whiten_: bool = True
        self.eps_: float = 0.0
        self.n_samples_: int = 0
        self._proj: torch.Tensor | None = None

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(
        self, X: Any, dim: int = 500, *, whiten: bool = True, eps: float = 1e-9, block_size: int | None = None
    ) -> PCAWhitening:
        """Learn the mean, the top-``dim`` principal axes and their variances from ``X``.

        Args:
            X: ``(n, d)`` training vectors (or ``(..., d)``: all leading axes are flattened into rows), any
                float dtype; typically already L2-normalised (the CNNaug pipeline fits on L2-normalised
                features, see :func:`augment_pipeline`).
            dim: output dimension (Razavian: 500). Needs ``dim ≤ d`` and more than ``dim`` training vectors.
            whiten: divide each axis by ``sqrt(λ + eps)`` (Razavian/Jégou–Chum: yes).
            eps: added to the eigenvalues before the square root. Default 1e-9 only guards against division by
                zero; it is negligible next to the eigenvalues of unit-norm features (total variance ≤ 1).
            block_size: rows per block of the streamed covariance (default: 64 MiB of float64).

        Returns:
            ``self``.

        Raises:
            ConfigError: bad ``dim``, too few vectors, or training data spanning fewer than ``dim`` dimensions.
            CnnbaseError: NaN/inf in ``X``.
        """
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ConfigError(f"dim must be a positive integer; got {dim!r}")
        if not (eps >= 0 and math.isfinite(eps)):
            raise ConfigError(f"eps must be a finite number ≥ 0; got {eps!r}")
        _check_block_arg(block_size, "block_size")
        Xa = _check_float(X, "X")
        if Xa.ndim < 2:
            raise ConfigError(f"X must be (n, d); got shape {tuple(Xa.shape)}")
        Xa = Xa.reshape(-1, Xa.shape[-1])
        n, d = int(Xa.shape[0]), int(Xa.shape[1])
        if dim > d:
            raise ConfigError(f"dim={dim} exceeds the feature dimension {d}; choose dim ≤ {d}")
        if n <= dim:
            raise ConfigError(
                f"PCA to {dim}-d needs more than {dim} training vectors; got {n}: lower dim or fit on more data"
            )
        cpu = torch.device("cpu")
        bs = block_size or max(1, _BLOCK_BYTES // (8 * d))
        mean = torch.zeros(d, dtype=torch.float64)
        for s in range(0, n, bs):
            x = _to_f32(Xa[s : s + bs], cpu).double()
            if not bool(torch.isfinite(x).all()):
                raise CnnbaseError(
                    f"X contains NaN/inf (rows {s}..{s + x.shape[0] - 1}); re-extract those features"
                )
            mean += x.sum(dim=0)
            _release_pages(Xa[s : s + bs])
        mean /= n
        cov = torch.zeros((d, d), dtype=torch.float64)
        for s in range(0, n, bs):
            x = _to_f32(Xa[s : s + bs], cpu).double() - mean
            cov.addmm_(x.T, x)
            _release_pages(Xa[s : s + bs])
        cov /= n - 1
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        total = float(evals.clamp_min(0).sum())
        evals = evals.flip(0)[:dim].clamp_min(0.0)
        comps = evecs.flip(1)[:, :dim].T.contiguous()  # (dim, d)
        # deterministic signs: the largest-magnitude coordinate of each axis is positive
        pivot = comps.abs().argmax(dim=1)
        signs = torch.sign(comps[torch.arange(dim), pivot])
        signs[signs == 0] = 1
        comps *= signs[:, None]
        top = float(evals[0]) if dim else 0.0
        if whiten and (top <= 0 or float(evals[-1]) <= 1e-12 * top):
            raise ConfigError(
                f"the training vectors span fewer than {dim} dimensions (eigenvalue {dim} is ~0), so whitening "
                "would blow up noise: lower dim or fit on more (distinct) vectors"
            )
        self.mean_ = mean.numpy()
        self.components_ = comps.numpy()
        self.explained_variance_ = evals.numpy()
        self.explained_variance_ratio_ = (evals / total).numpy() if total > 0 else np.zeros(dim)
        self.whiten_ = bool(whiten)
        self.eps_ = float(eps)
        self.n_samples_ = n
        self._proj = None
        return self

    # -- applying --------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Output dimension (number of kept axes)."""
        self._check_fitted()
        assert self.components_ is not None
        return int(self.components_.shape[0])

    def _check_fitted(self) -> None:
        if self.components_ is None or self.mean_ is None or self.explained_variance_ is None:
            raise ConfigError("PCAWhitening is not fitted: call fit(X) or PCAWhitening.load(path) first")

    def _projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (d, dim) matrix P and (d,) mean with transform(x) = (x − μ) @ P."""
        self._check_fitted()
        assert (
            self.components_ is not None and self.explained_variance_ is not None and self.mean_ is not None
        )
        if self._proj is None:
            P = torch.from_numpy(self.components_).T.clone()
            if self.whiten_:
                P /= torch.sqrt(torch.from_numpy(self.explained_variance_) + self.eps_)
            self._proj = P.float().contiguous()
        return self._proj, torch.from_numpy(self.mean_).float()

    def transform(self, X: Any, *, block_size: int | None = None) -> Any:
        """Project (and whiten) ``X``: ``(..., d)`` → ``(..., dim)``, float32, streamed in blocks of rows.

        Args:
            X: vectors of the fitted dimension ``d``, any float dtype (numpy/memmap or torch).
            block_size: rows per block (default: 64 MiB of float32 input).

        Returns:
            float32 ``(..., dim)``: numpy for numpy input, torch (same device) for torch input.
        """
        _check_block_arg(block_size, "block_size")
        P, mu = self._projection()
        Xa = _check_float(X, "X")
        d = P.shape[0]
        if Xa.ndim < 1 or Xa.shape[-1] != d:
            raise ConfigError(
                f"PCA-whitening was fitted on {d}-d features but got shape {tuple(Xa.shape)}: "
                "apply it to features of the same layer (and pooling) it was fitted on"
            )
        dev = _resolve_device(None, Xa)
        lead = tuple(Xa.shape[:-1])
        rows = Xa.reshape(-1, d)
        n = int(rows.shape[0])
        P, mu = P.to(dev), mu.to(dev)
        out = torch.empty((n, P.shape[1]), dtype=torch.float32, device=dev)
        bs = block_size or max(1, _BLOCK_BYTES // (4 * d))
        for s in range(0, n, bs):
            x = _to_f32(rows[s : s + bs], dev)
            torch.mm(x - mu, P, out=out[s : s + x.shape[0]])
            _release_pages(rows[s : s + bs])
        return _like(out.reshape(*lead, P.shape[1]), X)

    def fit_transform(self, X: Any, dim: int = 500, **kwargs: Any) -> Any:
        """``fit(X, dim, **kwargs)`` then ``transform(X)``."""
        return self.fit(X, dim, **kwargs).transform(X)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted parameters to an ``.npz`` file (plain arrays, no pickle).

        Args:
            path: target file; ``.npz`` is appended when missing (numpy's rule).

        Returns:
            The path actually written.
        """
        self._check_fitted()
        p = Path(path)
        if p.suffix != ".npz":
            p = p.with_name(p.name + ".npz")
        p.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "format": np.array(_PCAW_FORMAT),
            "version": np.array(_PCAW_VERSION, dtype=np.int64),
            "mean": np.asarray(self.mean_, np.float64),
            "components": np.asarray(self.components_, np.float64),
            "explained_variance": np.asarray(self.explained_variance_, np.float64),
            "whiten": np.array(self.whiten_),
            "eps": np.array(self.eps_, dtype=np.float64),
            "n_samples": np.array(self.n_samples_, dtype=np.int64),
        }
        if self.explained_variance_ratio_ is not None:
            arrays["explained_variance_ratio"] = np.asarray(self.explained_variance_ratio_, np.float64)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:  # written whole, then renamed: readers never see a partial file
                np.savez(f, **arrays)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PCAWhitening:
        """Read a file written by :meth:`save` (``np.load(allow_pickle=False)``; shapes are checked).

        Raises:
            CnnbaseError: missing, unreadable or inconsistent file.

        Example:
            >>> import numpy as np, tempfile, os
            >>> pcaw = PCAWhitening().fit(np.random.default_rng(0).normal(size=(50, 8)), dim=3)
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     path = pcaw.save(os.path.join(tmp, "oxford5k-pcaw500"))
            ...     back = PCAWhitening.load(path)
            >>> path.name, back.dim, bool(np.array_equal(back.components_, pcaw.components_))
            ('oxford5k-pcaw500.npz', 3, True)
        """
        p = Path(path)
        fix = "re-fit the PCA-whitening and save it again"
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {key: z[key] for key in z.files}
        except FileNotFoundError:
            raise CnnbaseError(f"PCA-whitening file {p} not found; check the path or {fix}") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CnnbaseError(f"cannot read PCA-whitening file {p} ({exc}); {fix}") from None
        needed = (
            "format",
            "version",
            "mean",
            "components",
            "explained_variance",
            "whiten",
            "eps",
            "n_samples",
        )
        missing = [key for key in needed if key not in arrays]
        if missing or str(arrays.get("format", "")) != _PCAW_FORMAT:
            raise CnnbaseError(
                f"{p} is not a cnnbase PCA-whitening file (missing {missing or 'format tag'}); {fix}"
            )
        if int(arrays["version"]) != _PCAW_VERSION:
            raise CnnbaseError(
                f"{p} has format version {int(arrays['version'])}, expected {_PCAW_VERSION}; {fix}"
            )
        mean, comps, ev = arrays["mean"], arrays["components"], arrays["explained_variance"]
        if comps.ndim != 2 or mean.shape != (comps.shape[1],) or ev.shape != (comps.shape[0],):
            raise CnnbaseError(
                f"{p}: inconsistent shapes mean {mean.shape}, components {comps.shape}, variances {ev.shape}; {fix}"
            )
        obj = cls()
        obj.mean_ = mean.astype(np.float64)
        obj.components_ = comps.astype(np.float64)
        obj.explained_variance_ = ev.astype(np.float64)
        ratio = arrays.get("explained_variance_ratio")
        obj.explained_variance_ratio_ = ratio.astype(np.float64) if ratio is not None else None
        obj.whiten_ = bool(arrays["whiten"])
        obj.eps_ = float(arrays["eps"])
        obj.n_samples_ = int(arrays["n_samples"])
        return obj

    def __repr__(self) -> str:
        if self.components_ is None:
            return "PCAWhitening(unfitted)"
        return (
            f"PCAWhitening(d={self.components_.shape[1]}, dim={self.components_.shape[0]}, "
            f"whiten={self.whiten_}, eps={self.eps_:g}, n_samples={self.n_samples_})"
        )


def augment_pipeline(X: Any, pcaw: PCAWhitening, power: float = 2.0) -> Any:
    """Razavian's CNNaug representation: L2 → PCA + whitening → L2 → signed power → L2.

    ``pcaw`` must have been fitted on **L2-normalised** features (the first step), e.g.
    ``PCAWhitening().fit(l2_normalize(train), dim=500)``.

    Args:
        X: raw features ``(..., d)`` (patch sets ``(n, P, d)`` work: each vector is processed independently).
        pcaw: a fitted :class:`PCAWhitening`.
        power: signed-power exponent (the paper: 2, "as written"; 0.5 is the usual power normalisation).

    Returns:
        float32 ``(..., pcaw.dim)`` unit-norm vectors (numpy or torch, as given).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> pcaw = PCAWhitening().fit(l2_normalize(rng.normal(size=(300, 32))), dim=8)
        >>> Y = augment_pipeline(rng.normal(size=(5, 32)).astype(np.float16), pcaw)
        >>> Y.shape, bool(np.allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-6))
        ((5, 8), True)
    """
    return l2_normalize(signed_power(l2_normalize(pcaw.transform(l2_normalize(X))), power))


# ----------------------------------------------------------------------------------------------------------
# spatial search ("-ss")
# ----------------------------------------------------------------------------------------------------------
def spatial_boxes(width: int, height: int, levels: int) -> list[tuple[int, int, int, int]]:
    """Razavian's multi-level sub-patches: level ``i = 1..levels`` tiles the image with ``i × i`` equal boxes.

    Geometry (the paper gives none beyond "i² overlapping equal-size sub-patches whose union covers the image"):
    at level ``i`` each box is ``2/(i+1)`` of the image width by ``2/(i+1)`` of its height and neighbours overlap
    by half a box (stride ``1/(i+1)`` of the side). This is the only equal-size, evenly spaced layout with 50%
    overlap that exactly covers the image, it makes level 1 the whole image, and the overlap means an object cut
    by one box boundary lies whole in a neighbouring box at the same scale. Levels 1..4 give box sides of 1, 2/3,
    1/2 and 2/5 of the image (1 + 4 + 9 + 16 = 30 boxes; levels=3: 14).

    Coordinates are integer pixels ``(x0, y0, x1, y1)``, right/bottom exclusive (a PIL crop box, as in
    ``Sample.box``): ``x0 = round(a·W/(i+1))``, ``x1 = round((a+2)·W/(i+1))`` (halves round up), so the boxes of a
    level are equal up to one pixel, stay inside the image and still cover it (rounding is monotone). On images
    narrower than ``i+1`` pixels a box may round to zero width; it is then widened to one pixel. Order: level 1
    first, then each level's boxes row by row (top to bottom), left to right within a row.

    Args:
        width: image width in pixels (≥ 1).
        height: image height in pixels (≥ 1).
        levels: number of levels ``h`` (Razavian: 4 for reference images, 3 for queries).

    Returns:
        ``levels·(levels+1)·(2·levels+1)/6`` boxes.

    Example:
        >>> spatial_boxes(300, 200, 2)
        [(0, 0, 300, 200), (0, 0, 200, 133), (100, 0, 300, 133), (0, 67, 200, 200), (100, 67, 300, 200)]
    """
    for name, v in (("width", width), ("height", height), ("levels", levels)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive integer; got {v!r}")
    W, H, L = int(width), int(height), int(levels)

    def span(j: int, i: int, size: int) -> tuple[int, int]:
        lo = (2 * j * size + i + 1) // (2 * (i + 1))  # round(j·size/(i+1)), halves up, in integers
        hi = (2 * (j + 2) * size + i + 1) // (2 * (i + 1))
        if hi <= lo:  # degenerate tiny image: keep one pixel
            hi = min(size, lo + 1)
            lo = hi - 1
        return lo, hi

    boxes: list[tuple[int, int, int, int]] = []
    for i in range(1, L + 1):
        for b in range(i):
            y0, y1 = span(b, i, H)
            for a in range(i):
                x0, x1 = span(a, i, W)
                boxes.append((x0, y0, x1, y1))
    return boxes


def square_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The smallest square containing ``box``, placed to use as much of the image as possible.

    Razavian et al. extract a patch's features "from the smallest square containing the region of interest
    (as opposed to resizing)", i.e. the network sees the region at its own aspect ratio. The square has side
    ``s = max(box width, box height)``. Along each axis:

    * if ``s`` fits in the image, the square is centred on the box and then shifted (never shrunk) just enough
      to lie inside the image, so it still contains the box and needs no padding;
    * if ``s`` exceeds the image along that axis (e.g. the whole-image box of a non-square photo), it is centred
      on the image and overhangs it equally on both sides: the returned coordinates are then negative or
      beyond ``width``/``height``, and the overhang must be **padded** by the extractor (not clipped, which would
      make it a non-square resize). Recommended fill: the normalisation mean colour, which becomes 0 after
      normalisation; note that ``PIL.Image.crop`` pads with black.

    Args:
        box: ``(x0, y0, x1, y1)``, right/bottom exclusive, inside the image, non-empty.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        ``(x0, y0, x1, y1)`` of the square, ``x1 − x0 == y1 − y0``.

    Example:
        >>> square_box((10, 20, 50, 40), 100, 100)  # 40×20 → 40×40, centred on the box
        (10, 10, 50, 50)
        >>> square_box((0, 0, 300, 200), 300, 200)  # whole landscape image → overhangs 50 px top and bottom
        (0, -50, 300, 250)
    """
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive integer; got {v!r}")
    if len(box) != 4:
        raise ConfigError(f"box must be (x0, y0, x1, y1); got {box!r}")
    x0, y0, x1, y1 = (int(c) for c in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ConfigError(f"box {box!r} is empty or outside the {width}×{height} image")
    s = max(x1 - x0, y1 - y0)

    def place(lo: int, hi: int, size: int) -> int:
        if s <= size:
            start = lo - (s - (hi - lo)) // 2  # centred on the box (floor)
            return min(max(start, 0), size - s)  # shifted inside the image; still contains [lo, hi)
        return -((s - size) // 2)  # centred on the image, overhanging both sides

    sx, sy = place(x0, x1, width), place(y0, y1, height)
    return sx, sy, sx + s, sy + s


def spatial_search_distance(
    query_patches: Any,
    db_patches: Any,
    *,
    block_size: int | None = None,
    query_batch: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Razavian's spatial-search image distance between every query and every database image.

    ``dist(q, r) = mean over query patches p of min over r's patches s of ‖q_p − r_s‖`` (true L2, not squared,
    so the mean is over Euclidean distances, as the paper states). The database is streamed ``block_size``
    images at a time (a float16 memmap ``(n_db, P_d, d)`` is fine) and queries are scored ``query_batch`` at a
    time, so memory is bounded by one block and one ``(query_batch·P_q) × (block_size·P_d)`` tile; the full
    ``(n_q, n_db)`` result is returned. Rank it with :func:`rank_distances`.

    Args:
        query_patches: ``(n_q, P_q, d)`` patch features (Razavian: P_q = 14, three levels).
        db_patches: ``(n_db, P_d, d)`` patch features (Razavian: P_d = 30, four levels).
        block_size: database images per block (default: 64 MiB of float32 patches).
        query_batch: query images per score tile (default: a 64 MiB tile).
        device: torch device for the arithmetic (default: the queries' device if a tensor, else CPU).

    Returns:
        float32 ``(n_q, n_db)`` distances.

    Example:
        >>> import numpy as np
        >>> q = np.array([[[0, 0], [1, 0]]], dtype=np.float16)      # 1 query, 2 patches
        >>> db = np.array([[[0, 0], [0, 2]], [[1, 1], [5, 5]]], dtype=np.float32)  # 2 images, 2 patches
        >>> spatial_search_distance(q, db).round(4)   # image 0: mean(0, 1); image 1: mean(√2, 1)
        array([[0.5   , 1.2071]], dtype=float32)
    """
    _check_block_arg(block_size, "block_size")
    _check_block_arg(query_batch, "query_batch")
    dev = _resolve_device(device, query_patches)
    Qa = _check_float(query_patches, "query_patches")
    if Qa.ndim != 3:
        raise ConfigError(f"query_patches must be 3-D (n_q, patches, d); got shape {tuple(Qa.shape)}")
    db = _Items(db_patches, "db_patches", ndim=3)
    nq, pq, d = (int(s) for s in Qa.shape)
    pd = db.rows_per_item
    if d != db.d:
        raise ConfigError(f"query patches are {d}-d but database patches are {db.d}-d: use the same layer")
    if pq == 0 or pd == 0:
        raise ConfigError("every image needs at least one patch")
    out = np.empty((nq, db.n), np.float32)
    if nq == 0 or db.n == 0:
        return out
    Q = _to_f32(Qa, dev).reshape(nq * pq, d)
    qn = _row_sqnorms(Q, "query_patches", 0, pq)
    nb = block_size or db.default_block()
    qb = query_batch or max(1, min(nq, _TILE_BYTES // (4 * pq * min(nb, db.n) * pd)))
    scratch = _Scratch(dev)
    for start, X in db.blocks(nb, scratch):
        xn = _row_sqnorms(X, "db_patches", start, pd, fast=True)
        m = X.shape[0] // pd
        for qs in range(0, nq, qb):
            qe = min(nq, qs + qb)
            tile = scratch.get("tile", (qe - qs) * pq, X.shape[0])
            D = torch.addmm(xn.unsqueeze(0), Q[qs * pq : qe * pq], X.T, beta=1.0, alpha=-2.0, out=tile)
            # min over reference patches of ‖x‖² − 2 q·x, then + ‖q‖² (constant per query patch), then sqrt
            dmin = D.view(-1, m, pd).amin(dim=2).add_(qn[qs * pq : qe * pq, None]).clamp_min_(0.0).sqrt_()
            out[qs:qe, start : start + m] = dmin.view(qe - qs, pq, m).mean(dim=1).cpu().numpy()
    return out
