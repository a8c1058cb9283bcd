"""The Razavian 2014 card end to end on generated data in the official layouts, with the tiny random backbone.

One module-scoped run of ``run_card`` (VOCdevkit, MIT-67, Oxford, Paris, Holidays, UKBench present; CUB, Flowers,
UIUC attributes and H3D absent) is then checked piece by piece against independent computations: the jitter views
(count, geometry), the summing of SVM scores over views, the spatial-search distance (brute force), the
PCA-whitening learned on one set and applied to another, resumption, deviations and the leaderboard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from cnnbase.cli import app
from cnnbase.features.store import FeatureStore
from cnnbase.protocol import card_hash, load_card, run_card
from cnnbase.results import build_table, read_records
from cnnbase.runner import Context, FeatureOptions
from tests.fakes.benchmarks import VOC_CLASSES, jpeg, make_holidays, make_mit67, make_ukbench, write

MODEL = "tiny_cnn"
PCA_DIM = 8  # tiny_cnn's fc6 has 32 dims: the card's 500 is overridden (a recorded deviation)
OVERRIDES = {"retrieval.pca.dim": PCA_DIM}
OPTS = FeatureOptions(weights="random", workers=0, batch_size=64)
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- fake layouts


def make_voc07(root: Path) -> dict:
    """``VOCdevkit/VOC2007``: 20 trainval images (class k and k+1 present, k+2 difficult) and 8 test images."""
    main = root / "VOC2007" / "ImageSets" / "Main"
    trainval = [f"{i:06d}" for i in range(100, 120)]
    test = [f"{i:06d}" for i in range(1, 9)]
    splits = {"train": trainval[:10], "val": trainval[10:], "trainval": trainval, "test": test}

    def label(split: str, k: int, c: int) -> int:
        if split == "test":
            return 1 if c in ((2 * k) % 20, (2 * k + 5) % 20) else 0 if c == (k + 9) % 20 else -1
        return 1 if c in (k % 20, (k + 1) % 20) else 0 if c == (k + 2) % 20 else -1

    for split, ids in splits.items():
        write(main / f"{split}.txt", ids, crlf=True)
        base = "test" if split == "test" else "trainval"
        offset = 0 if split in ("test", "trainval", "train") else 10
        for c, cls in enumerate(VOC_CLASSES):
            write(main / f"{cls}_{split}.txt", [f"{i} {label(base, k + offset, c):2d}" for k, i in enumerate(ids)], crlf=True)
    for k, i in enumerate(trainval + test):
        jpeg(root / "VOC2007" / "JPEGImages" / f"{i}.jpg", (44 + 3 * (k % 5), 36 + 2 * (k % 3)), seed=100 + k)
    return {"trainval": trainval, "test": test}


def make_oxford_like(root: Path, *, paris: bool) -> dict:
    """Oxford (flat jpg/, oxc1_ prefix) or Paris (nested jpg/paris/<landmark>/, empty _good) ground truth + images.

    Boxes lie inside their images (the query is cropped to its box); sizes mix landscape and portrait so that
    the smallest containing squares overhang the image.
    """
    if paris:
        gt = root / "paris_120310"
        db = {"defense": [f"paris_defense_{i:06d}" for i in (1, 2, 3)], "louvre": [f"paris_louvre_{i:06d}" for i in (1, 2, 3)]}
        names = [x for v in db.values() for x in v]
        queries = {"defense_1": ("paris_defense_000001", (4.0, 3.0, 40.0, 30.0), [], ["paris_defense_000002", "paris_defense_000003"], ["paris_louvre_000003"]),
                   "louvre_1": ("paris_louvre_000001", (10.0, 2.0, 34.0, 44.0), [], ["paris_louvre_000002"], [])}
        prefix = ""
    else:
        gt = root / "gt_files_170407"
        names = [f"all_souls_{i:06d}" for i in (13, 26, 91)] + [f"ashmolean_{i:06d}" for i in (7, 25)] + [f"oxford_{i:06d}" for i in (1, 2, 3410)]
        db = {"": names}
        queries = {"all_souls_1": ("all_souls_000013", (6.5, 4.1, 48.5, 35.7), ["all_souls_000091"], ["all_souls_000026"], ["oxford_003410"]),
                   "ashmolean_1": ("ashmolean_000007", (3.0, 5.0, 30.0, 50.0), ["ashmolean_000025"], [], [])}
        prefix = "oxc1_"
    sizes = {}
    for k, x in enumerate(names):
        sizes[x] = (56, 42) if k % 2 == 0 else (40, 54)
        folder = root / "jpg" / ("paris" if paris else "") / next(lm for lm, v in db.items() if x in v)
        jpeg(folder / f"{x}.jpg", sizes[x], seed=(300 if paris else 200) + k)
    for q, (img, box, good, ok, junk) in queries.items():
        write(gt / f"{q}_query.txt", [f"{prefix}{img} " + " ".join(f"{v:.1f}" if paris is False else f"{v:.6f}" for v in box)])
        write(gt / f"{q}_good.txt", good)
        write(gt / f"{q}_ok.txt", ok)
        write(gt / f"{q}_junk.txt", junk)
    return {"database": sorted(names), "queries": queries, "sizes": sizes}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build the fake benchmarks, a datasets.yaml pointing at them, and run the whole card once."""
    tmp = tmp_path_factory.mktemp("razavian")
    data = tmp / "data"
    facts = {
        "voc": make_voc07(data / "VOCdevkit"),
        "mit67": make_mit67(data / "mit67"),
        "oxford": make_oxford_like(data / "oxford5k", paris=False),
        "paris": make_oxford_like(data / "paris6k", paris=True),
        "holidays": make_holidays(data / "holidays"),
        "ukbench": make_ukbench(data / "ukbench", n=8),
    }
    cfg = yaml.safe_load((ROOT / "datasets.yaml").read_text())
    for entry in cfg["datasets"].values():
        entry["root"] = str(data / entry["root"])
    cfg["datasets"]["ukbench"]["options"] = {"n_images": 8}
    dfile = tmp / "datasets.yaml"
    dfile.write_text(yaml.safe_dump(cfg))
    lines: list[str] = []
    ctx = Context(store=FeatureStore(tmp / "store"), results=tmp / "records.jsonl", progress=False, datasets_file=str(dfile))
    recs = run_card("razavian2014", MODEL, overrides=OVERRIDES, opts=OPTS, ctx=ctx, log=lines.append)
    return {"tmp": tmp, "dfile": str(dfile), "ctx": ctx, "records": recs, "lines": lines, "facts": facts}


def _rec(env: dict, dataset: str, variant: str) -> dict:
    (r,) = [r for r in env["records"] if r["dataset"] == dataset and r["label"] == variant]
    return r


def _features(env: dict, key: str) -> tuple[np.ndarray, dict]:
    e = env["ctx"].store.find(key.split(" ")[0])
    f = e.load()
    return np.asarray(f.array, dtype=np.float32), f.manifest


def _runner(env: dict, pre_spec: str = "square:32,bicubic"):  # type: ignore[no-untyped-def]
    from cnnbase.backbones import LoadedBackbone
    from cnnbase.features.extract import ModelRunner

    bb = env["ctx"].backbone(MODEL, OPTS)
    pre = bb.preprocess.override(pre_spec)
    tap = bb.resolve_layer("fc6")
    return ModelRunner(LoadedBackbone(bb.spec, bb.model, bb.weights_id, pre), {"fc6": tap.node}), pre


# ---------------------------------------------------------------------------------------------- the run


def test_runs_every_present_dataset_and_skips_the_absent_ones(env: dict) -> None:
    got = sorted((r["dataset"], r["label"]) for r in env["records"])
    assert got == sorted(
        [(d, v) for d in ("voc2007", "mit67") for v in ("CNN-SVM", "CNNaug-SVM")]
        + [(d, v) for d in ("oxford5k", "paris6k", "holidays", "ukbench") for v in ("CNN", "CNN-ss", "CNNaug-ss")]
    )
    skipped = sorted(line.split(":")[0] for line in env["lines"] if line.startswith("skipped "))
    assert skipped == [f"skipped {d}" for d in ("apascal", "ayahoo", "cub200", "flowers102", "h3d")]
    assert all("not found" in line for line in env["lines"])
    assert len(read_records(env["ctx"].results)) == 16


def test_records_carry_card_hash_variant_settings_and_deviations(env: dict) -> None:
    h = card_hash(load_card("razavian2014"))
    for r in env["records"]:
        c = r["card"]
        assert c["name"] == "razavian2014" and c["hash"] == h and c["variant"] == r["label"] and len(c["run_key"]) == 16
        if r["task"] == "retrieval":
            assert c["deviations"] == [f"retrieval.pca.dim: 500 → {PCA_DIM}"]
        else:
            assert c["deviations"] == []
    voc = _rec(env, "voc2007", "CNNaug-SVM")
    s = voc["card"]["settings"]
    assert (s["layer"], s["preprocess"], s["mode"], s["C"], s["c_selection"], s["normalization"]) == (
        "fc6", "square:32,bicubic", "ovr", 0.2, "paper", "l2+power2")
    assert s["jitter"]["rotations"] == [-10.0, 10.0] and voc["jitter"]["rotations"] == [-10.0, 10.0]
    assert voc["metric"] == "voc07_map" and voc["head"]["loss"] == "squared_hinge" and voc["head"]["difficult"] == "ignore"
    assert voc["preprocess"]["mode"] == "square" and voc["preprocess"]["crop"] == 32 and voc["preprocess"]["interpolation"] == "bicubic"
    plain = _rec(env, "voc2007", "CNN-SVM")
    assert plain["views"] == 1 and plain["head"]["loss"] == "hinge" and plain["head"]["solver"] == "liblinear"
    mit = _rec(env, "mit67", "CNNaug-SVM")
    assert mit["metric"] == "mean_class_accuracy" and mit["head"]["mode"] == "ovo" and mit["head"]["C"] == 2.0
    assert "accuracy" in mit["extra"]
    ox = _rec(env, "oxford5k", "CNNaug-ss")["card"]["settings"]
    assert ox["query"] == "crop" and ox["whitening"]["set"] == "paris6k" and ox["spatial"]["reference_levels"] == 4
    assert _rec(env, "holidays", "CNN")["dataset_variant"] == "original"


# ---------------------------------------------------------------------------------------------- jitter and SVM


def _expected_views(img: Image.Image) -> list[Image.Image]:
    """The 16 CNNaug views written out independently of cnnbase.features.views."""
    w, h = img.size
    cw, ch = round(w * 2 / 3), round(h * 2 / 3)
    crops = [(0, 0, cw, ch), (w - cw, 0, w, ch), (0, h - ch, cw, h), (w - cw, h - ch, w, h)]
    crops.append(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    rots = []
    for a in (-10.0, 10.0):
        t = math.radians(abs(a))
        s = min(w / (w * math.cos(t) + h * math.sin(t)), h / (w * math.sin(t) + h * math.cos(t)))
        rw, rh = int(w * s), int(h * s)
        x0, y0 = (w - rw) // 2, (h - rh) // 2
        rots.append(img.rotate(a, resample=Image.BILINEAR).crop((x0, y0, x0 + rw, y0 + rh)))
    base = [img] + [img.crop(b) for b in crops] + rots
    return base + [v.transpose(Image.FLIP_LEFT_RIGHT) for v in base]


def test_jitter_views_count_and_geometry(env: dict) -> None:
    from cnnbase.features.views import preprocess_pil, rotated_inner_crop

    rec = _rec(env, "voc2007", "CNNaug-SVM")
    arr, man = _features(env, rec["feature_keys"]["train"])
    assert arr.shape == (20, 16, 32) and man["views"] == 16
    runner, pre = _runner(env)
    voc = env["tmp"] / "data" / "VOCdevkit" / "VOC2007" / "JPEGImages"
    for k in (0, 7):  # two image sizes
        img = Image.open(voc / f"{env['facts']['voc']['trainval'][k]}.jpg").convert("RGB")
        views = _expected_views(img)
        assert len(views) == 16
        assert all(v.size == (round(img.size[0] * 2 / 3), round(img.size[1] * 2 / 3)) for v in views[1:6])  # 4/9 area
        feats = runner(torch.stack([preprocess_pil(v, pre) for v in views]))["fc6"]
        np.testing.assert_allclose(arr[k], feats, rtol=1e-5, atol=1e-6)
    # the rotated views hold no fill pixel: a white image stays white after rotation + inner crop
    white = Image.new("RGB", (57, 41), (255, 255, 255))
    for a in (-10.0, 10.0):
        assert np.asarray(rotated_inner_crop(white, a)).min() >= 250


def test_svm_trains_on_every_view_and_sums_test_scores(env: dict) -> None:
    from cnnbase.heads.svm import LinearSVMHead
    from cnnbase.metrics import compute
    from cnnbase.runner import normalize

    rec = _rec(env, "voc2007", "CNNaug-SVM")
    head = LinearSVMHead.load(rec["head"]["file"])
    assert head.n_features_in_ == 32 and head.multilabel_ and np.all(head.C_ == 0.2)
    test, _ = _features(env, rec["feature_keys"]["test"])
    assert test.shape == (8, 16, 32)
    dec = head.decision_function(normalize(test.reshape(-1, 32), "l2+power2")).reshape(8, 16, 20)
    summed = dec.sum(axis=1)
    from cnnbase.datasets import open_dataset

    y = open_dataset("voc2007", datasets=env["dfile"]).labels["test"]
    res = compute("voc07_map", scores=summed, labels=y)
    assert rec["value"] == pytest.approx(res.value, abs=1e-12)
    got = np.array([np.nan if v is None else v for v in rec["per_class"].values()])
    np.testing.assert_allclose(got, res.per_item, atol=1e-12)
    # the training set was every view of every trainval image: refitting on them gives the saved weights
    train, _ = _features(env, rec["feature_keys"]["train"])
    y_tr = open_dataset("voc2007", datasets=env["dfile"]).labels["trainval"]
    refit = LinearSVMHead(mode="ovr", C=0.2, difficult="ignore").fit(
        normalize(train.reshape(-1, 32), "l2+power2"), np.repeat(y_tr, 16, axis=0), groups=np.repeat(np.arange(20), 16)
    )
    np.testing.assert_allclose(refit.coef_, head.coef_, rtol=1e-4, atol=1e-5)
    # one-vs-one (MIT-67) votes on the summed pair scores
    mit = _rec(env, "mit67", "CNNaug-SVM")
    h2 = LinearSVMHead.load(mit["head"]["file"])
    t2, _ = _features(env, mit["feature_keys"]["test"])
    pred = h2.predict_from_decision(h2.decision_function(normalize(t2.reshape(-1, 32), "l2+power2")).reshape(len(t2), 16, -1).sum(axis=1))
    y2 = open_dataset("mit67", datasets=env["dfile"]).labels["test"]
    assert mit["value"] == pytest.approx(compute("mean_class_accuracy", y_true=y2, y_pred=pred, n_classes=3).value)


# ---------------------------------------------------------------------------------------------- retrieval


def _padded_square(img: Image.Image, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> Image.Image:
    """The smallest containing square cut with numpy, the overhang set to ``fill`` (independent of spatial.py)."""
    x0, y0, x1, y1 = box
    a = np.asarray(img)
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    out[:] = fill
    h, w = a.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return Image.fromarray(out)


def _brute_distance(Q: np.ndarray, D: np.ndarray) -> np.ndarray:
    out = np.zeros((len(Q), len(D)))
    for i, q in enumerate(Q):
        for j, r in enumerate(D):
            out[i, j] = np.mean([min(np.linalg.norm(p.astype(np.float64) - s) for s in r) for p in q])
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _aps_from_distances(dist: np.ndarray, gnd: list[dict], metric: str) -> np.ndarray:
    from cnnbase.metrics import compute

    ranks = np.argsort(dist, axis=1, kind="stable")
    return np.asarray(compute(metric, ranks=ranks, gnd=gnd).per_item, dtype=float)


def test_spatial_search_patches_and_distance_against_brute_force(env: dict) -> None:
    from cnnbase.datasets import open_dataset
    from cnnbase.features.spatial import fill_colour
    from cnnbase.features.views import preprocess_pil
    from cnnbase.heads.retrieval import spatial_boxes, square_box

    rec = _rec(env, "oxford5k", "CNN-ss")
    assert rec["head"]["type"] == "spatial-search" and (rec["head"]["query_vectors"], rec["head"]["reference_vectors"]) == (14, 30)
    Q, _ = _features(env, rec["feature_keys"]["query"])
    D, _ = _features(env, rec["feature_keys"]["database"])
    assert Q.shape == (2, 14, 32) and D.shape == (8, 30, 32)
    ds = open_dataset("oxford5k", datasets=env["dfile"])
    runner, pre = _runner(env)
    fill = fill_colour(pre)
    assert fill == (124, 116, 104)  # ImageNet mean colour
    # geometry: every patch of one database image and of one cropped query, recomputed independently
    for arr, sample, levels in ((D[0], ds.samples("database")[0], 4), (Q[0], ds.samples("query")[0], 3)):
        img = Image.open(sample.path).convert("RGB")
        if sample.box is not None:  # the query is cropped to its box before any processing
            x0, y0, x1, y1 = sample.box
            img = img.crop((math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)))
        w, h = img.size
        boxes = spatial_boxes(w, h, levels)
        assert len(boxes) == (30 if levels == 4 else 14)
        squares = [square_box(b, w, h) for b in boxes]
        assert all(s[2] - s[0] == s[3] - s[1] == max(b[2] - b[0], b[3] - b[1]) for s, b in zip(squares, boxes))
        assert any(s[0] < 0 or s[1] < 0 or s[2] > w or s[3] > h for s in squares)  # some squares overhang: padded
        feats = runner(torch.stack([preprocess_pil(_padded_square(img, s, fill), pre) for s in squares]))["fc6"]
        np.testing.assert_allclose(arr, feats, rtol=1e-5, atol=1e-6)
    # distance: mean over query patches of the min L2 over reference patches, brute force, then the official AP
    dist = _brute_distance(_l2(Q), _l2(D))
    aps = _aps_from_distances(dist, ds.queries, "oxford_map")
    got = np.array(list(rec["per_query"].values()), dtype=float)
    np.testing.assert_allclose(got, aps, atol=1e-9)
    assert rec["value"] == pytest.approx(np.nanmean(aps), abs=1e-9)
    # the whole-image CNN row: one vector per image, query crop squashed to the square input
    whole = _rec(env, "oxford5k", "CNN")
    q1, _ = _features(env, whole["feature_keys"]["query"])
    d1, _ = _features(env, whole["feature_keys"]["database"])
    assert q1.shape == (2, 32) and d1.shape == (8, 32)
    d_whole = np.linalg.norm(_l2(q1)[:, None] - _l2(d1)[None], axis=-1)
    assert whole["value"] == pytest.approx(np.nanmean(_aps_from_distances(d_whole, ds.queries, "oxford_map")), abs=1e-9)


def test_pca_whitening_learned_on_paris_applied_to_oxford(env: dict) -> None:
    from cnnbase.datasets import open_dataset
    from cnnbase.heads.retrieval import PCAWhitening

    rec = _rec(env, "oxford5k", "CNNaug-ss")
    w = rec["head"]["whitening"]
    paris_db = _rec(env, "paris6k", "CNN-ss")["feature_keys"]["database"]
    assert (w["set"], w["split"], w["feature_key"]) == ("paris6k", "database", paris_db)
    assert (w["n_images"], w["n_vectors"], w["dim"], w["whiten"], w["power"]) == (6, 6 * 30, PCA_DIM, True, 2.0)
    P, _ = _features(env, paris_db)
    mine = PCAWhitening().fit(_l2(P).reshape(-1, 32), dim=PCA_DIM, whiten=True)
    saved = PCAWhitening.load(w["file"])
    np.testing.assert_allclose(saved.components_, mine.components_, atol=1e-6)
    np.testing.assert_allclose(saved.mean_, mine.mean_, atol=1e-9)
    # applied to Oxford: L2 → PCA+whitening (Paris statistics) → L2 → signed power 2 → L2, then spatial search
    Q, _ = _features(env, rec["feature_keys"]["query"])
    D, _ = _features(env, rec["feature_keys"]["database"])

    def aug(x: np.ndarray) -> np.ndarray:
        y = (_l2(x) - mine.mean_) @ mine.components_.T / np.sqrt(mine.explained_variance_ + 1e-9)
        y = _l2(y)
        return _l2(np.sign(y) * y**2)

    ds = open_dataset("oxford5k", datasets=env["dfile"])
    aps = _aps_from_distances(_brute_distance(aug(Q), aug(D)), ds.queries, "oxford_map")
    np.testing.assert_allclose(np.array(list(rec["per_query"].values()), dtype=float), aps, atol=1e-6)
    # and the other way round: Paris is whitened with Oxford's database patches
    pw = _rec(env, "paris6k", "CNNaug-ss")["head"]["whitening"]
    assert pw["set"] == "oxford5k" and pw["n_vectors"] == 8 * 30


def test_holidays_and_ukbench_use_eight_jitter_views(env: dict) -> None:
    from cnnbase.datasets import open_dataset

    hol = _rec(env, "holidays", "CNN-ss")
    assert hol["head"]["query_vectors"] == hol["head"]["reference_vectors"] == 8
    assert hol["feature_keys"]["query"].endswith("(database rows)")  # queries are database images: no second pass
    H, _ = _features(env, hol["feature_keys"]["database"])
    assert H.shape == (5, 16, 32)
    ds = open_dataset("holidays", datasets=env["dfile"])
    qi = [i for i, s in enumerate(ds.samples("database")) if s.id in {q.id for q in ds.samples("query")}]
    aps = _aps_from_distances(_brute_distance(_l2(H[qi, :8]), _l2(H[:, :8])), ds.queries, "holidays_map")
    assert hol["value"] == pytest.approx(np.nanmean(aps), abs=1e-9)
    aug = _rec(env, "holidays", "CNNaug-ss")["head"]["whitening"]
    assert (aug["set"], aug["n_vectors"]) == ("paris6k", 6 * 8)
    uk = _rec(env, "ukbench", "CNN")
    assert uk["metric"] == "ukbench_score" and 1.0 <= uk["value"] <= 4.0  # the query itself counts
    assert uk["extra"]["recall_at_4_percent"] == pytest.approx(uk["value"] * 25)
    assert _rec(env, "ukbench", "CNNaug-ss")["head"]["whitening"]["set"] == "holidays"


# ---------------------------------------------------------------------------------------------- resumption


def test_rerun_reuses_records_and_redo_reuses_every_stage(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnbase.features import extract as engine
    from cnnbase.heads.retrieval import PCAWhitening
    from cnnbase.heads.svm import LinearSVMHead

    lines: list[str] = []
    again = run_card("razavian2014", MODEL, overrides=OVERRIDES, opts=OPTS, ctx=env["ctx"], log=lines.append)
    assert sorted(r["run_id"] for r in again) == sorted(r["run_id"] for r in env["records"])
    assert sum(line.startswith("done ") for line in lines) == 16
    n = len(read_records(env["ctx"].results))
    monkeypatch.setattr(engine.ModelRunner, "__call__", lambda *a, **k: pytest.fail("features recomputed"))
    monkeypatch.setattr(LinearSVMHead, "fit", lambda *a, **k: pytest.fail("SVM retrained"))
    monkeypatch.setattr(PCAWhitening, "fit", lambda *a, **k: pytest.fail("PCA-whitening refitted"))
    redo = run_card("razavian2014", MODEL, datasets=["voc2007", "oxford5k"], variants=["CNNaug-SVM", "CNNaug-ss"],
                    overrides=OVERRIDES, opts=OPTS, ctx=env["ctx"], redo=True, log=lines.append)
    assert [(r["dataset"], r["label"]) for r in redo] == [("voc2007", "CNNaug-SVM"), ("oxford5k", "CNNaug-ss")]
    assert redo[0]["head"]["reused"] and redo[1]["head"]["whitening"]["reused"]
    assert redo[0]["value"] == _rec(env, "voc2007", "CNNaug-SVM")["value"]
    assert redo[1]["value"] == _rec(env, "oxford5k", "CNNaug-ss")["value"]
    assert len(read_records(env["ctx"].results)) == n + 2


# ---------------------------------------------------------------------------------------------- deviations, CLI


@pytest.mark.filterwarnings("ignore:LinearSVMHead")  # liblinear's hinge on 4 tiny fc7 vectors: slow to converge
def test_deviations_recorded_and_marked_in_the_leaderboard(env: dict, tmp_path: Path) -> None:
    results = tmp_path / "dev.jsonl"
    ctx = Context(store=env["ctx"].store, results=results, progress=False, datasets_file=env["dfile"])
    (rec,) = run_card("razavian2014", MODEL, datasets=["mit67"], variants=["CNN-SVM"], opts=OPTS, ctx=ctx,
                      overrides={"features.layer": "fc7", "datasets.mit67.C": 1.0})
    assert rec["layer"] == "fc7" and rec["head"]["C"] == 1.0
    assert rec["card"]["deviations"] == ["datasets.mit67.C: 2.0 → 1.0", "features.layer: fc6 → fc7"]
    # the card's own layer given explicitly is no deviation
    (same,) = run_card("razavian2014", MODEL, datasets=["mit67"], variants=["CNN-SVM"], opts=OPTS, ctx=ctx,
                       overrides={"features.layer": "fc6"})
    assert same["card"]["deviations"] == [] and same["card"]["run_key"] == _rec(env, "mit67", "CNN-SVM")["card"]["run_key"]
    # a later run that deviates (C only) gets a row of its own: the protocol's fc6 row keeps its value
    (dev,) = run_card("razavian2014", MODEL, datasets=["mit67"], variants=["CNN-SVM"], opts=OPTS, ctx=ctx,
                      overrides={"datasets.mit67.C": 1.0})
    t = build_table(read_records(results))
    rows = {row[0]: row[1] for row in t.rows}
    assert set(rows) == {"tiny_cnn fc7 (CNN-SVM)†*1", "tiny_cnn fc6 (CNN-SVM)†", "tiny_cnn fc6 (CNN-SVM)†*2"}
    assert rows["tiny_cnn fc6 (CNN-SVM)†"] == f"{same['value'] * 100:.1f}"
    assert rows["tiny_cnn fc6 (CNN-SVM)†*2"] == f"{dev['value'] * 100:.1f}"
    assert "*2 deviates from its protocol card (not comparable with the reference rows): datasets.mit67.C: 2.0 → 1.0" in t.notes


@pytest.mark.filterwarnings("ignore:LinearSVMHead")
def test_cli_run_and_leaderboard_with_reference(env: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    results = tmp_path / "cli.jsonl"
    common = ["--store", str(env["ctx"].store.root), "--results", str(results), "--datasets", env["dfile"], "--workers", "0", "--no-progress"]
    r = runner.invoke(app, ["run", str(ROOT / "tasks" / "razavian2014.yaml"), "--model", MODEL, "--weights", "random",
                            "--dataset", "mit67,cub200", "--variant", "CNN-SVM", *common], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "skipped cub200: not found" in r.output
    assert "mit67" in r.output and "CNN-SVM" in r.output and "mean_class_accuracy =" in r.output
    r = runner.invoke(app, ["run", "razavian2014", "--model", MODEL, "--weights", "random", "--dataset", "mit67",
                            "--variant", "CNN-SVM", "--C", "0.5", "--layer", "fc7", *common], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "* deviates: datasets.mit67.C: 2.0 → 0.5; features.layer: fc6 → fc7" in r.output
    r = runner.invoke(app, ["leaderboard", "--results", str(results), "--reference", "razavian2014", "--format", "md"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "| model | mit67 (mean_class_accuracy) |"
    assert "| CNN-SVM [razavian2014] | 58.4 |" in lines and "| CNNaug-SVM [razavian2014] | 69.0 |" in lines
    mine = [x for x in lines if x.startswith("| tiny_cnn")]
    assert len(mine) == 2 and all("(" in x and ")" in x for x in mine)  # value (Δ vs 58.4)
    value = json.loads(results.read_text().splitlines()[0])["value"] * 100
    assert f"{value:.1f} ({value - 58.4:+.1f})" in "".join(mine)
    assert any(x.startswith("| tiny_cnn fc7 (CNN-SVM)†*") for x in mine)
    r = runner.invoke(app, ["run", "razavian2014", "--model", MODEL, "--dataset", "nowhere", *common])
    assert r.exit_code == 1 and "'nowhere' is not a dataset of card razavian2014" in r.output
