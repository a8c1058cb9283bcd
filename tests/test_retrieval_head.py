"""Tests for cnnbase.heads.retrieval: every fast path is checked against a naive reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cnnbase.errors import CnnbaseError, ConfigError
from cnnbase.heads.retrieval import (
    PCAWhitening,
    augment_pipeline,
    l2_normalize,
    rank,
    rank_distances,
    signed_power,
    spatial_boxes,
    spatial_search_distance,
    square_box,
)


# ----------------------------------------------------------------------------------------------------------
# naive references
# ----------------------------------------------------------------------------------------------------------
def brute_sqdist(Q: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Exact squared L2 distances in float64 by explicit differences."""
    Q, X = np.asarray(Q, np.float64), np.asarray(X, np.float64)
    return ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)


def brute_rank(D: np.ndarray, k: int | None = None, exclude: np.ndarray | None = None):
    """Full argsort, ties to the lower index (stable sort), optional per-query exclusion."""
    D = np.array(D, dtype=np.float64)
    idx = np.argsort(D, axis=1, kind="stable")
    if exclude is not None:
        idx = np.stack([row[row != e] for row, e in zip(idx, exclude, strict=True)])
    if k is not None:
        idx = idx[:, :k]
    return idx, np.take_along_axis(D, idx, axis=1)


def brute_spatial(Qp: np.ndarray, Xp: np.ndarray) -> np.ndarray:
    """mean over query patches of min over reference patches of the L2 distance: a triple loop."""
    Qp, Xp = np.asarray(Qp, np.float64), np.asarray(Xp, np.float64)
    out = np.zeros((len(Qp), len(Xp)))
    for qi in range(len(Qp)):
        for ri in range(len(Xp)):
            per_patch = []
            for p in Qp[qi]:
                per_patch.append(min(np.sqrt(((p - s) ** 2).sum()) for s in Xp[ri]))
            out[qi, ri] = np.mean(per_patch)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def signed_perms(rng, n: int, base) -> np.ndarray:
    """Rows that are random signed permutations of ``base``: small exact values, one common norm, many ties.

    All rows share one norm, as L2-normalised features do: ``rank`` computes database norms as
    ``vector_norm(x)²`` (within an ulp of the sum of squares), so exact-arithmetic ties between rows of different
    norms are not guaranteed to survive, while ties between rows of equal norm are.
    """
    base = np.asarray(base, np.float64)
    rows = np.stack([rng.permutation(base) for _ in range(n)])
    return rows * rng.choice([-1.0, 1.0], size=rows.shape)


# ----------------------------------------------------------------------------------------------------------
# element-wise transforms
# ----------------------------------------------------------------------------------------------------------
def test_l2_normalize_rows_zero_rows_and_dtypes(rng):
    X = rng.normal(size=(6, 5)).astype(np.float16)
    X[2] = 0
    Y = l2_normalize(X)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    norms = np.linalg.norm(Y, axis=1)
    np.testing.assert_allclose(np.delete(norms, 2), 1.0, atol=1e-6)
    assert np.all(Y[2] == 0) and np.all(np.isfinite(Y))
    np.testing.assert_allclose(
        Y,
        X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True).clip(1e-12),
        atol=1e-6,
    )
    # last axis of any shape; torch in → torch out
    P = rng.normal(size=(2, 3, 4))
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(P), axis=-1), 1.0, atol=1e-6)
    T = l2_normalize(torch.tensor(P, dtype=torch.bfloat16))
    assert isinstance(T, torch.Tensor) and T.dtype == torch.float32


def test_signed_power():
    x = np.array([-3.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float16)
    np.testing.assert_allclose(signed_power(x, 2.0), [-9.0, -0.25, 0.0, 0.25, 4.0])
    np.testing.assert_allclose(
        signed_power(x, 0.5), np.sign(x) * np.sqrt(np.abs(x.astype(np.float64))), rtol=1e-6
    )
    assert signed_power(x, 1.0).dtype == np.float32
    t = signed_power(torch.tensor([-2.0, 3.0]), 3)
    assert torch.equal(t, torch.tensor([-8.0, 27.0]))
    for bad in (0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(ConfigError):
            signed_power(x, bad)


# ----------------------------------------------------------------------------------------------------------
# rank
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block_size", [1, 3, 7, 1000])
@pytest.mark.parametrize("topk", [None, 1, 5, 39, 40, 10**6])
def test_rank_exact_with_ties(block_size, topk, rng):
    # small integers: every score is exact in float32, and ties are plentiful (many straddle block edges)
    X = signed_perms(rng, 40, [2, 1, 1, 0, 0, 0]).astype(np.float32)
    X[10] = X[3]
    X[25] = X[3]
    Q = np.concatenate([rng.integers(-2, 3, size=(8, 6)), X[3:4]]).astype(np.float32)
    idx, dist = rank(Q, X, topk=topk, block_size=block_size, query_batch=4)
    ref_idx, ref_d = brute_rank(brute_sqdist(Q, X), topk)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, np.sqrt(ref_d), rtol=1e-6, atol=1e-3)  # sqrt near 0
    k = idx.shape[1]
    assert list(idx[-1, :3]) == [3, 10, 25][:k]  # a query equal to three database rows: lower index first


@pytest.mark.parametrize("block_size", [1, 4, 7, 64])
def test_rank_all_identical_database_ties_to_lower_index(block_size):
    X = np.ones((50, 3), np.float16)
    idx, dist = rank(np.zeros((2, 3), np.float16), X, topk=5, block_size=block_size)
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_allclose(dist, np.sqrt(3), rtol=1e-6)


def test_rank_memmap_float16(tmp_path, rng):
    # quarter-integers are exact in float16 and their products/sums exact in float32
    data = signed_perms(rng, 500, [2, 1.5, 1, 1, 0.75, 0.5, 0.25, 0.25] + [0] * 8).astype(np.float16)
    path = tmp_path / "db.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=data.shape)
    mm[:] = data
    mm.flush()
    del mm
    db = np.load(path, mmap_mode="r")
    assert isinstance(db, np.memmap)
    Q = np.concatenate([(rng.integers(-8, 9, size=(12, 16)) / 4), data[[7, 300]]]).astype(np.float16)
    ref_full, ref_d = brute_rank(brute_sqdist(Q, data))
    for topk in (10, None):
        idx, dist = rank(Q, db, topk=topk, block_size=64, query_batch=5)
        k = 10 if topk else 500
        np.testing.assert_array_equal(idx, ref_full[:, :k])
        np.testing.assert_allclose(dist, np.sqrt(ref_d[:, :k]), rtol=1e-6, atol=1e-3)
    assert idx[-2, 0] == 7 and idx[-1, 0] == 300
    np.testing.assert_array_equal(np.load(path), data)  # streaming never writes to the file


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_rank_memmap_modes_see_current_data(tmp_path, rng, mode):
    # streamed blocks are released from the process after use (shared maps only): results must not change,
    # and in-memory edits of a copy-on-write map ("c") must be seen, never discarded
    data = rng.normal(size=(300, 8)).astype(np.float32)
    np.save(tmp_path / "db.npy", data)
    db = np.load(tmp_path / "db.npy", mmap_mode=mode)
    if mode == "c":
        db[123] = 50.0
        data[123] = 50.0
    q = np.full((1, 8), 50.0, np.float32)
    for _ in range(2):  # second pass re-reads released pages
        idx, _ = rank(q, db, topk=5, block_size=16)
        np.testing.assert_array_equal(idx, np.argsort(brute_sqdist(q, data), axis=1, kind="stable")[:, :5])
    assert idx[0, 0] == 123 or mode != "c"


def test_rank_random_floats_against_float64(rng):
    X = rng.normal(size=(300, 32)).astype(np.float16)
    Q = rng.normal(size=(20, 32)).astype(np.float32)
    D = np.sqrt(brute_sqdist(Q, X))
    idx, dist = rank(Q, X, topk=15, block_size=37)
    # the k smallest distances are found, and each reported distance is that of the reported item
    np.testing.assert_allclose(dist, np.sort(D, axis=1)[:, :15], atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(D, idx, axis=1), dist, atol=1e-4)
    # on random data (no near-ties) the order itself matches, and full ranking agrees with top-k
    np.testing.assert_array_equal(idx, np.argsort(D, axis=1)[:, :15])
    full_idx, _ = rank(Q, X, block_size=37)
    np.testing.assert_array_equal(full_idx[:, :15], idx)


@pytest.mark.parametrize("topk", [None, 3, 29])
def test_rank_exclude_self(topk, rng):
    X = signed_perms(rng, 30, [2, 1, 1, 0, 0]).astype(np.float32)
    sel = np.array([0, 4, 29, 17])
    idx, dist = rank(X[sel], X, topk=topk, block_size=8, exclude=sel)
    ref_idx, ref_d = brute_rank(brute_sqdist(X[sel], X), topk, exclude=sel)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, np.sqrt(ref_d), atol=1e-3)
    assert idx.shape == (4, min(topk or 29, 29))
    assert not np.any(idx == sel[:, None])


def test_rank_torch_inputs_and_empty_queries(rng):
    X = rng.integers(-2, 3, size=(20, 4)).astype(np.float32)
    Q = rng.integers(-2, 3, size=(3, 4)).astype(np.float32)
    a = rank(torch.from_numpy(Q).to(torch.bfloat16), torch.from_numpy(X).half(), topk=4, block_size=6)
    b = rank(Q, X, topk=4)
    np.testing.assert_array_equal(a[0], b[0])
    i, d = rank(np.zeros((0, 4), np.float32), X, topk=4)
    assert i.shape == (0, 4) and d.shape == (0, 4)


def test_rank_errors(rng):
    X = rng.normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ConfigError, match="4-d"):
        rank(rng.normal(size=(2, 5)), X)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            rank(X[:2], X, topk=bad)
    with pytest.raises(ConfigError):
        rank(X[:2], X, block_size=0)
    with pytest.raises(ConfigError, match="exclude"):
        rank(X[:2], X, exclude=np.array([0, 10]))
    with pytest.raises(ConfigError, match="exclude"):
        rank(X[:2], X, exclude=np.array([0]))
    with pytest.raises(ConfigError, match="uint16"):
        rank(X[:2], X.view(np.uint16))
    Xbad = X.copy()
    Xbad[7, 1] = np.nan
    with pytest.raises(CnnbaseError, match="item 7"):
        rank(X[:2], Xbad, block_size=3)
    with pytest.raises(ConfigError, match="nothing to rank"):
        rank(X[:1], X[:1], exclude=np.array([0]))


def test_rank_distances_matches_stable_argsort(rng):
    D = rng.integers(0, 4, size=(6, 25)).astype(np.float32)
    D[1, 5] = np.inf
    for topk in (None, 1, 7, 24, 25):
        idx, d = rank_distances(D, topk=topk)
        ref_idx, ref_d = brute_rank(D, topk)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(d, ref_d.astype(np.float32))
    ex = np.array([0, 5, 24, 3, 3, 10])
    for topk in (None, 4):
        idx, _ = rank_distances(D, topk=topk, exclude=ex)
        np.testing.assert_array_equal(idx, brute_rank(D, topk, exclude=ex)[0])
    with pytest.raises(CnnbaseError):
        rank_distances(np.array([[0.0, np.nan]]))


# ----------------------------------------------------------------------------------------------------------
# spatial search
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [(97, 61), (64, 64), (500, 375), (3, 2)])
def test_spatial_boxes_geometry(levels, size):
    W, H = size
    boxes = spatial_boxes(W, H, levels)
    assert len(boxes) == sum(i * i for i in range(1, levels + 1))
    assert boxes[0] == (0, 0, W, H)  # level 1 is the whole image
    pos = 0
    for i in range(1, levels + 1):
        level = boxes[pos : pos + i * i]
        pos += i * i
        cover = np.zeros((H, W), bool)
        for x0, y0, x1, y1 in level:
            assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
            if W >= i + 1 and H >= i + 1:  # equal size up to rounding: 2/(i+1) of each side, within 1 px
                assert abs((x1 - x0) - 2 * W / (i + 1)) <= 1 and abs((y1 - y0) - 2 * H / (i + 1)) <= 1
            cover[y0:y1, x0:x1] = True
        assert cover.all()  # the union of each level covers the image
        grid = np.array(level).reshape(i, i, 4)  # rows top to bottom, left to right
        for r, c in itertools.product(range(i), range(i - 1)):
            left, right = grid[r, c], grid[r, c + 1]
            assert right[1] == left[1] and (right[0] > left[0] if W >= i + 1 else right[0] >= left[0])
            if W >= 2 * (i + 1):  # neighbours overlap by half a box (within rounding)
                overlap = left[2] - right[0]
                assert overlap > 0 and abs(overlap - W / (i + 1)) <= 1
        for r, c in itertools.product(range(i - 1), range(i)):
            below, above = grid[r + 1, c], grid[r, c]
            assert below[0] == above[0] and (below[1] > above[1] if H >= i + 1 else below[1] >= above[1])


def test_spatial_boxes_paper_counts_and_errors():
    assert len(spatial_boxes(640, 480, 4)) == 30 and len(spatial_boxes(640, 480, 3)) == 14
    for args in ((0, 10, 2), (10, 10, 0), (10.0, 10, 2)):
        with pytest.raises(ConfigError):
            spatial_boxes(*args)


def test_square_box_properties(rng):
    assert square_box((10, 20, 50, 40), 100, 100) == (10, 10, 50, 50)
    assert square_box((0, 0, 100, 10), 100, 100) == (0, 0, 100, 100)  # shifted inside, no padding
    assert square_box((0, 0, 300, 200), 300, 200) == (0, -50, 300, 250)  # overhang split evenly, to be padded
    assert square_box((90, 0, 100, 60), 100, 100) == (40, 0, 100, 60)  # near the right edge: shifted left
    for _ in range(500):
        W, H = (int(v) for v in rng.integers(1, 80, size=2))
        x0, x1 = sorted(rng.choice(W + 1, size=2, replace=False)) if W > 1 else (0, 1)
        y0, y1 = sorted(rng.choice(H + 1, size=2, replace=False)) if H > 1 else (0, 1)
        sx0, sy0, sx1, sy1 = square_box((int(x0), int(y0), int(x1), int(y1)), W, H)
        s = max(x1 - x0, y1 - y0)
        assert sx1 - sx0 == s and sy1 - sy0 == s  # the smallest square containing the box
        assert sx0 <= x0 and sx1 >= x1 and sy0 <= y0 and sy1 >= y1
        for lo, hi, size in ((sx0, sx1, W), (sy0, sy1, H)):
            if s <= size:
                assert 0 <= lo and hi <= size  # fits: inside the image
            else:
                assert lo <= 0 and hi > size and abs((-lo) - (hi - size)) <= 1  # centred overhang
    with pytest.raises(ConfigError):
        square_box((5, 5, 5, 9), 10, 10)
    with pytest.raises(ConfigError):
        square_box((0, 0, 11, 5), 10, 10)


@pytest.mark.parametrize("block_size,query_batch", [(None, None), (1, 1), (2, 3), (100, 100)])
def test_spatial_search_distance_matches_triple_loop(block_size, query_batch, rng):
    Qp = rng.normal(size=(4, 3, 8)).astype(np.float16)
    Xp = rng.normal(size=(7, 5, 8)).astype(np.float16)
    Xp[2, 4] = Qp[1, 0]  # an exact patch match: its min distance is 0
    got = spatial_search_distance(Qp, Xp, block_size=block_size, query_batch=query_batch)
    assert got.shape == (4, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, brute_spatial(Qp, Xp), rtol=1e-5, atol=2e-3)


def test_spatial_search_memmap_and_rank(tmp_path, rng):
    Xp = (rng.integers(-4, 5, size=(9, 30, 6)) / 2).astype(np.float16)
    np.save(tmp_path / "p.npy", Xp)
    Qp = Xp[[3, 8], :14].copy()  # queries = first 14 patches of two database images
    got = spatial_search_distance(Qp, np.load(tmp_path / "p.npy", mmap_mode="r"), block_size=2)
    np.testing.assert_allclose(got, brute_spatial(Qp, Xp), atol=2e-3)
    assert got[0, 3] < 1e-3 and got[1, 8] < 1e-3  # identical patches (up to the norm expansion's rounding)
    idx, _ = rank_distances(got, topk=1)
    np.testing.assert_array_equal(idx[:, 0], [3, 8])
    with pytest.raises(ConfigError):
        spatial_search_distance(Qp[:, :, :5], Xp)
    with pytest.raises(ConfigError):
        spatial_search_distance(Qp[0], Xp)


# ----------------------------------------------------------------------------------------------------------
# PCA-whitening
# ----------------------------------------------------------------------------------------------------------
def _anisotropic(rng, n, d=12):
    A = rng.normal(size=(d, d)) * np.linspace(3, 0.2, d)
    return rng.normal(size=(n, d)) @ A.T + rng.normal(size=d)


def test_pca_whitening_fit_on_one_set_apply_to_another(rng):
    A = _anisotropic(rng, 400)
    B = _anisotropic(rng, 50)
    pcaw = PCAWhitening().fit(A.astype(np.float32), dim=6)
    assert (
        pcaw.mean_.shape == (12,)
        and pcaw.components_.shape == (6, 12)
        and pcaw.explained_variance_.shape == (6,)
    )
    np.testing.assert_allclose(pcaw.components_ @ pcaw.components_.T, np.eye(6), atol=1e-10)
    ref_ev = np.sort(np.linalg.eigvalsh(np.cov(A.astype(np.float32).astype(np.float64), rowvar=False)))[::-1]
    np.testing.assert_allclose(pcaw.explained_variance_, ref_ev[:6], rtol=1e-8)
    np.testing.assert_allclose(pcaw.explained_variance_ratio_, ref_ev[:6] / ref_ev.sum(), rtol=1e-8)
    # whitened training data: zero mean, identity covariance
    TA = pcaw.transform(A)
    np.testing.assert_allclose(TA.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(TA, rowvar=False), np.eye(6), atol=1e-4)
    # another set: the manual formula
    manual = (B - pcaw.mean_) @ pcaw.components_.T / np.sqrt(pcaw.explained_variance_ + pcaw.eps_)
    TB = pcaw.transform(B.astype(np.float16))
    np.testing.assert_allclose(
        TB,
        (B.astype(np.float16).astype(np.float64) - pcaw.mean_)
        @ pcaw.components_.T
        / np.sqrt(pcaw.explained_variance_ + pcaw.eps_),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(pcaw.transform(B), manual, rtol=1e-4, atol=1e-4)
    # blocked = unblocked; (..., d) shapes; torch in → torch out
    np.testing.assert_array_equal(pcaw.transform(B, block_size=7), pcaw.transform(B))
    assert pcaw.transform(B.reshape(5, 10, 12)).shape == (5, 10, 6)
    assert isinstance(pcaw.transform(torch.from_numpy(B)), torch.Tensor)
    # deterministic signs: largest-magnitude coordinate of each axis is positive
    piv = np.abs(pcaw.components_).argmax(1)
    assert np.all(pcaw.components_[np.arange(6), piv] > 0)


def test_pca_matches_sklearn_up_to_sign(rng):
    from sklearn.decomposition import PCA

    A = _anisotropic(rng, 300)
    B = _anisotropic(rng, 20)
    ours = PCAWhitening().fit(A, dim=5, eps=0.0).transform(B)
    ref = PCA(n_components=5, whiten=True, svd_solver="full").fit(A).transform(B)
    signs = np.sign((ours * ref).sum(0))
    np.testing.assert_allclose(ours, ref * signs, rtol=1e-4, atol=1e-4)
    plain = PCAWhitening().fit(A, dim=5, whiten=False).transform(B)
    np.testing.assert_allclose(
        np.abs(plain), np.abs(PCA(5, svd_solver="full").fit(A).transform(B)), rtol=1e-4, atol=1e-4
    )


def test_pca_fit_streams_memmap_blocks(tmp_path, rng):
    A = _anisotropic(rng, 257).astype(np.float16)
    np.save(tmp_path / "a.npy", A)
    p1 = PCAWhitening().fit(np.load(tmp_path / "a.npy", mmap_mode="r"), dim=4, block_size=10)
    p2 = PCAWhitening().fit(A, dim=4)
    np.testing.assert_allclose(p1.components_, p2.components_, atol=1e-9)
    np.testing.assert_allclose(p1.explained_variance_, p2.explained_variance_, rtol=1e-9)


def test_pca_save_load_round_trip(tmp_path, rng):
    A = _anisotropic(rng, 100)
    pcaw = PCAWhitening().fit(A, dim=3, eps=1e-6)
    path = pcaw.save(tmp_path / "sub" / "pcaw")
    assert path.name == "pcaw.npz" and path.exists()
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert {"mean", "components", "explained_variance", "whiten", "eps"} <= set(z.files)
    back = PCAWhitening.load(path)
    for attr in ("mean_", "components_", "explained_variance_", "explained_variance_ratio_"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(pcaw, attr))
    assert (back.whiten_, back.eps_, back.n_samples_, back.dim) == (True, 1e-6, 100, 3)
    np.testing.assert_array_equal(back.transform(A[:5]), pcaw.transform(A[:5]))
    assert "dim=3" in repr(back)


def test_pca_errors(tmp_path, rng):
    A = _anisotropic(rng, 30)
    with pytest.raises(ConfigError, match="not fitted"):
        PCAWhitening().transform(A)
    with pytest.raises(ConfigError, match="exceeds"):
        PCAWhitening().fit(A, dim=13)
    with pytest.raises(ConfigError, match="more than"):
        PCAWhitening().fit(A[:5], dim=5)
    with pytest.raises(ConfigError, match="span fewer"):
        PCAWhitening().fit(np.repeat(A[:3], 10, axis=0), dim=4)  # rank 2 after centring
    pcaw = PCAWhitening().fit(A, dim=3)
    with pytest.raises(ConfigError, match="12-d"):
        pcaw.transform(A[:, :5])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CnnbaseError, match="cannot read"):
        PCAWhitening.load(bad)
    with pytest.raises(CnnbaseError, match="not found"):
        PCAWhitening.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", mean=np.zeros(3))
    with pytest.raises(CnnbaseError, match="not a cnnbase"):
        PCAWhitening.load(tmp_path / "other.npz")
    Anan = A.copy()
    Anan[4, 0] = np.inf
    with pytest.raises(CnnbaseError, match="NaN/inf"):
        PCAWhitening().fit(Anan, dim=3)


def test_augment_pipeline(rng):
    train = l2_normalize(_anisotropic(rng, 200, d=16))
    pcaw = PCAWhitening().fit(train, dim=6)
    X = _anisotropic(rng, 9, d=16).astype(np.float16)
    Y = augment_pipeline(X, pcaw)
    assert Y.shape == (9, 6) and Y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-6)
    # manual: L2 → PCA+whitening → L2 → sign·|x|² → L2
    Z = X.astype(np.float64)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    Z = (Z - pcaw.mean_) @ pcaw.components_.T / np.sqrt(pcaw.explained_variance_ + pcaw.eps_)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    Z = np.sign(Z) * Z**2
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    np.testing.assert_allclose(Y, Z, atol=1e-5)
    # patch sets (n, P, d) work vector by vector
    np.testing.assert_allclose(augment_pipeline(X.reshape(3, 3, 16), pcaw).reshape(9, 6), Y, atol=1e-6)
