"""The Oquab 2014 transfer protocol: patch grid, labelling rules, background sampling, aggregation, caching, and a
tiny end-to-end train/evaluate on generated images with generated boxes (tiny_cnn, random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnbase.datasets.base import ImageSet, Sample
from cnnbase.transfer import (
    OQUAB_SCALES,
    GridSpec,
    LabelRules,
    TransferOptions,
    aggregate_scores,
    deviations,
    load_card,
    localisation_map,
    options_from_card,
    patch_grid,
    save_map_png,
    subsample_background,
)
from cnnbase.transfer.head import HeadOptions
from cnnbase.transfer.patches import (
    DROPPED,
    WHY_AMBIGUOUS,
    WHY_TWO_LABELS,
    ImageObjects,
    label_patches,
)

# -- generated data ------------------------------------------------------------------------------------------------
CLASSES = ["square", "disc", "cross"]
COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 240)]


def _draw(draw: ImageDraw.ImageDraw, cls: int, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if cls == 0:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=COLOURS[0])
    elif cls == 1:
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=COLOURS[1])
    else:
        t = max(2, (x1 - x0) // 4)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((x0, cy - t, x1 - 1, cy + t), fill=COLOURS[2])
        draw.rectangle((cx - t, y0, cx + t, y1 - 1), fill=COLOURS[2])


def make_shapes(root: Path, n: int, *, size: int = 64, seed: int = 0, prefix: str = "") -> tuple[list[Sample], np.ndarray, dict]:
    """``n`` noise images with 1–2 non-overlapping shapes each; class = shape and colour."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    samples, labels, objects = [], [], {}
    for i in range(n):
        arr = rng.integers(90, 166, size=(size, size + 8, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        d = ImageDraw.Draw(img)
        k = 1 + int(rng.random() < 0.25)
        classes = rng.choice(3, size=k, replace=False)
        objs, placed = [], []
        for c in classes:
            for _ in range(50):
                s = int(rng.integers(18, 28))
                x0, y0 = int(rng.integers(0, size + 8 - s)), int(rng.integers(0, size - s))
                b = (x0, y0, x0 + s, y0 + s)
                if all(b[2] <= p[0] or p[2] <= b[0] or b[3] <= p[1] or p[3] <= b[1] for p in placed):
                    break
            placed.append(b)
            _draw(d, int(c), b)
            objs.append({"class": CLASSES[c], "box": tuple(float(v) for v in b), "difficult": False, "truncated": False})
        sid = f"{prefix}{i:03d}"
        p = root / f"{sid}.png"
        img.save(p)
        samples.append(Sample(sid, p))
        y = -np.ones(3, np.int8)
        y[classes] = 1
        labels.append(y)
        objects[sid] = objs
    return samples, np.stack(labels), objects


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    root = tmp_path_factory.mktemp("shapes")
    tr, ytr, otr = make_shapes(root / "img", 30, seed=1, prefix="tr")
    te, yte, ote = make_shapes(root / "img", 16, seed=2, prefix="te")
    return ImageSet(
        name="shapes", task="multilabel", root=root, classes=list(CLASSES), splits={"trainval": tr, "test": te},
        labels={"trainval": ytr, "test": yte}, meta={"objects": {**otr, **ote}},
    )


def tiny_opts(**head: object) -> TransferOptions:
    """Small and fast: fewer patches and scales, tiny_cnn random weights, float32 storage, no workers.

    tiny_cnn's random fc7 activations are ~0.1 (AlexNet's are ~1 and 4096-d), so the test starts from larger
    weights and a larger rate to learn within a few dozen epochs of ~30 steps."""
    h = {"hidden": 256, "max_epochs": 40, "batch_size": 16, "init_std": 0.1, "lr": 0.05, **head}
    return TransferOptions(
        weights="random", grid=GridSpec(scales=(1.0, 1.6, 2.4, 3.2), target=40), dtype="float32", workers=0,
        head=HeadOptions(**h), device="cpu", extract_batch=128, shard_size=8,
    )


# -- patch grid ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w,h", [(500, 375), (375, 500), (500, 333), (500, 500), (353, 500), (480, 360)])
def test_grid_about_500_patches_nine_scales_half_overlap(w: int, h: int) -> None:
    boxes, scale, f = patch_grid(w, h)
    assert 450 <= len(boxes) <= 550, len(boxes)
    assert f <= 0.5
    assert sorted(set(scale.tolist())) == list(range(9)) and len(OQUAB_SCALES) == 9
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    for k, lam in enumerate(OQUAB_SCALES):
        b = boxes[scale == k]
        side = round(min(w, h) / lam)
        assert ((b[:, 2] - b[:, 0]) == side).all() and ((b[:, 3] - b[:, 1]) == side).all()  # square, side = min/λ
        xs, ys = np.unique(b[:, 0]), np.unique(b[:, 1])
        assert len(b) == len(xs) * len(ys)  # a regular grid
        assert xs[0] == 0 and xs[-1] + side == w and ys[0] == 0 and ys[-1] + side == h  # edge to edge
        for pos in (xs, ys):
            if len(pos) > 1:
                assert (np.diff(pos) <= 0.5 * side).all()  # neighbours overlap by ≥ 50% of the side


def test_grid_options_target_and_overlap() -> None:
    few, _, f = patch_grid(500, 375, GridSpec(target=1))
    assert f == 0.5 and len(few) < 300  # the 50% overlap bound wins over the target
    boxes, scale, f = patch_grid(500, 375, GridSpec(scales=(1.0, 2.0), target=10_000, min_overlap=0.75))
    for k in (0, 1):
        b = boxes[scale == k]
        side = b[0, 2] - b[0, 0]
        assert (np.diff(np.unique(b[:, 0])) <= 0.25 * side).all()
    assert len(patch_grid(500, 375, GridSpec(target=500))[0]) < len(patch_grid(500, 375, GridSpec(target=800))[0])
    assert np.array_equal(patch_grid(500, 375)[0], patch_grid(500, 375)[0])  # deterministic


def test_grid_rejects_bad_specs() -> None:
    from cnnbase.errors import ConfigError

    with pytest.raises(ConfigError):
        GridSpec(scales=(0.5,))
    with pytest.raises(ConfigError):
        GridSpec(min_overlap=1.0)


# -- labelling rules -----------------------------------------------------------------------------------------------
P = np.array([[0, 0, 10, 10]])  # one patch, area 100


def objs(*items: tuple[int, tuple[float, float, float, float]], difficult: tuple[bool, ...] = ()) -> ImageObjects:
    cls = np.array([c for c, _ in items], np.int64)
    boxes = np.array([b for _, b in items], np.float64)
    diff = np.array(difficult or (False,) * len(items), bool)
    return ImageObjects(cls, boxes, diff)


def lab(o: ImageObjects, **rules: object) -> int:
    labels, _ = label_patches(P, o, 3, LabelRules(**rules))
    return int(labels[0])


def test_rule_i_patch_fraction_threshold() -> None:
    # box inside the patch: |P∩B| = |B| (rule ii holds), |P∩B| / |P| around 0.2
    assert lab(objs((1, (0, 0, 2.0, 10)))) == 1  # exactly 20% of the patch
    assert lab(objs((1, (0, 0, 2.01, 10)))) == 1  # just above
    assert lab(objs((1, (0, 0, 1.99, 10)))) == 3  # just below → background
    assert lab(objs((1, (0, 0, 1.99, 10))), patch_fraction=0.19) == 1


def test_rule_ii_box_fraction_threshold() -> None:
    # box 10x10 shifted right: |P∩B| / |B| around 0.6 (rule i holds: ≥ 20% of the patch)
    assert lab(objs((2, (4.0, 0, 14.0, 10)))) == 2  # exactly 60% of the box
    assert lab(objs((2, (3.99, 0, 13.99, 10)))) == 2  # just above
    assert lab(objs((2, (4.01, 0, 14.01, 10)))) == 3  # just below → background
    assert lab(objs((2, (4.01, 0, 14.01, 10))), box_fraction=0.59) == 2


def test_rule_iii_more_than_one_object() -> None:
    inside = (0, (0, 0, 5, 5))  # matches (25% of the patch, 100% of the box)
    # a second, non-matching object (a large box) covering just below / just above 20% of the patch
    below = (1, (8.01, 0, 40, 40))  # covers 19.9% of the patch, tiny part of its own box
    above = (1, (7.99, 0, 40, 40))  # covers 20.1%
    assert lab(objs(inside, below)) == 0  # overlaps only one object → positive
    assert lab(objs(inside, above)) == 3  # overlaps two objects → background (fails iii)
    assert lab(objs(inside, above), ambiguous="drop") == DROPPED
    assert lab(objs(inside, below), overlap_min=0.0) == 3  # any intersection counts as overlapping
    assert lab(objs(inside, (1, (10, 0, 40, 40))), overlap_min=0.0) == 0  # touching edges: no intersection


def test_two_labels_dropped_same_class_twice_background() -> None:
    a, b = (0, 0, 5, 5), (5, 5, 10, 10)
    labels, why = label_patches(P, objs((0, a), (2, b)), 3)
    assert labels[0] == DROPPED and why[0] == WHY_TWO_LABELS  # Fig. 4: two labels → deleted
    labels, why = label_patches(P, objs((0, a), (0, b)), 3)
    assert labels[0] == 3 and why[0] == WHY_AMBIGUOUS  # one label but two objects → background (iii)


def test_difficult_objects_policy() -> None:
    o = objs((1, (0, 0, 5, 5)), difficult=(True,))
    assert lab(o) == 1
    assert lab(o, difficult="drop") == DROPPED
    assert lab(objs((1, (0, 0, 5, 5)), (2, (30, 30, 40, 40)), difficult=(False, True)), difficult="drop") == 1


def test_labels_vectorised_over_a_grid() -> None:
    boxes, _, _ = patch_grid(200, 150, GridSpec(target=100))
    o = objs((0, (20, 20, 60, 60)), (1, (120, 40, 180, 120)))
    labels, _ = label_patches(boxes, o, 3)
    for p, y in zip(boxes, labels, strict=True):  # the same rules, one patch at a time
        assert label_patches(p[None], o, 3)[0][0] == y
    assert {0, 1, 3} <= set(labels.tolist())


# -- background subsampling ----------------------------------------------------------------------------------------
def test_background_subsampling_rate() -> None:
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(4000, 20), rng.integers(0, 20, 300), np.full(50, DROPPED)]).astype(np.int16)
    rng.shuffle(labels)
    keep = subsample_background(labels, 20, 0.1, seed=3)
    assert (labels[keep] == 20).sum() == 400  # exactly 10% of the background
    assert keep[(labels >= 0) & (labels < 20)].all()  # every positive
    assert not keep[labels == DROPPED].any()
    assert np.array_equal(keep, subsample_background(labels, 20, 0.1, seed=3))
    assert not np.array_equal(keep, subsample_background(labels, 20, 0.1, seed=4))
    assert (labels[subsample_background(labels, 20, 0.25, seed=3)] == 20).sum() == 1000


# -- aggregation -----------------------------------------------------------------------------------------------------
def test_aggregation_formula() -> None:
    p = np.array([[0.5, 0.1], [1.0, 0.2], [0.9, 0.3], [0.2, 0.2]])
    img = np.array([0, 0, 0, 1])
    s = aggregate_scores(p, img, 3, k=5)
    assert s[0, 0] == pytest.approx((0.5**5 + 1.0 + 0.9**5) / 3)
    assert s[0, 1] == pytest.approx((0.1**5 + 0.2**5 + 0.3**5) / 3)
    assert s[1].tolist() == pytest.approx([0.2**5, 0.2**5])
    assert np.isnan(s[2]).all()  # an image without patches
    rng = np.random.default_rng(0)
    q, idx = rng.random((200, 4)), rng.integers(0, 7, 200)
    ref = np.array([[np.mean(q[idx == i, c] ** 2.5) for c in range(4)] for i in range(7)])
    assert np.allclose(aggregate_scores(q, idx, 7, k=2.5), ref)
    assert np.allclose(aggregate_scores(q, idx, 7, k=1), [[q[idx == i, c].mean() for c in range(4)] for i in range(7)])


# -- localisation maps -----------------------------------------------------------------------------------------------
def test_localisation_map_is_mean_of_covering_patches(tmp_path: Path) -> None:
    boxes = np.array([[0, 0, 4, 4], [2, 2, 6, 6]])
    m = localisation_map(boxes, np.array([0.2, 0.8]), (8, 6))
    assert m.shape == (6, 8)
    assert m[0, 0] == pytest.approx(0.2) and m[5, 5] == pytest.approx(0.8)
    assert m[3, 3] == pytest.approx(0.5)  # covered by both
    assert m[0, 7] == 0.0  # covered by none
    img = Image.fromarray(np.full((6, 8, 3), 128, np.uint8))
    p = save_map_png(tmp_path / "maps" / "x_cls.png", img, m, title="x cls")
    with Image.open(p) as out:
        assert out.format == "PNG" and out.size[0] == 2 * 8 * 40 and out.size[1] > 6 * 40  # small images enlarged


# -- the card --------------------------------------------------------------------------------------------------------
def test_card_pins_the_published_settings() -> None:
    card = load_card("oquab2014")
    o = options_from_card(card)
    assert o == TransferOptions()  # the code's defaults are the card's
    assert o.grid.scales == OQUAB_SCALES and o.grid.target == 500 and o.grid.min_overlap == 0.5
    assert (o.labels.patch_fraction, o.labels.box_fraction, o.background_rate, o.k) == (0.2, 0.6, 0.1, 5)
    assert (o.head.hidden, o.head.lr, o.head.lr_factor, o.head.plateaus) == (2048, 0.01, 0.1, 3)
    assert deviations(o, card) == []
    dev = deviations(options_from_card(card, k=3.0, scales=(1.0, 2.0)), card)
    assert any(d.startswith("test.k") for d in dev) and any(d.startswith("patches.scales") for d in dev)


# -- store, training, evaluation -----------------------------------------------------------------------------------
def test_patch_features_cached_and_reused(shapes: ImageSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnbase.backbones import load_backbone
    from cnnbase.features.extract import ModelRunner
    from cnnbase.features.store import FeatureStore
    from cnnbase.transfer.features import extract_patch_features

    store = FeatureStore(tmp_path / "store")
    bb = load_backbone("tiny_cnn", "random")
    kw = dict(layer="fc7", node=bb.resolve_layer("fc7").node, grid=GridSpec(scales=(1.0, 2.0, 3.2), target=30),
              dtype="float32", workers=0, shard_size=4, progress=False, device="cpu")
    calls = {"n": 0}
    orig = ModelRunner.__call__

    def counting(self, x):  # type: ignore[no-untyped-def]
        calls["n"] += len(x)
        return orig(self, x)

    monkeypatch.setattr(ModelRunner, "__call__", counting)
    first = extract_patch_features(bb, shapes, "test", store, **kw)
    assert not first.reused and calls["n"] == len(first.patches) > 16 * 20
    assert np.isfinite(first.array).all() and first.array.shape == (len(first.patches), 32)
    # one patch recomputed by hand equals the stored row
    from cnnbase.images import load_rgb
    from cnnbase.transfer.features import crop_patches

    i = 5
    a = int(first.offsets[i])
    x = crop_patches(load_rgb(shapes.samples("test")[i].path), first.boxes[a : a + 1], 32)
    ref = ModelRunner(bb, {"fc7": bb.resolve_layer("fc7").node}, pool="none")(x)["fc7"]
    assert np.allclose(first.array[a], ref[0], atol=1e-5)
    calls["n"] = 0
    again = extract_patch_features(bb, shapes, "test", store, **kw)
    assert again.reused and calls["n"] == 0 and again.key == first.key
    assert np.array_equal(np.asarray(again.array), np.asarray(first.array))


def test_interrupted_extraction_resumes(shapes: ImageSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnbase.backbones import load_backbone
    from cnnbase.features.extract import ModelRunner
    from cnnbase.features.store import FeatureStore
    from cnnbase.transfer.features import extract_patch_features

    bb = load_backbone("tiny_cnn", "random")
    kw = dict(layer="fc7", node=bb.resolve_layer("fc7").node, grid=GridSpec(scales=(1.0, 2.0), target=12),
              dtype="float32", workers=0, shard_size=4, progress=False, device="cpu", batch_size=8)
    ref = extract_patch_features(bb, shapes, "test", FeatureStore(tmp_path / "a"), **kw)
    orig, seen = ModelRunner.__call__, {"n": 0}

    def dying(self, x):  # type: ignore[no-untyped-def]
        seen["n"] += 1
        if seen["n"] > 10:
            raise KeyboardInterrupt
        return orig(self, x)

    monkeypatch.setattr(ModelRunner, "__call__", dying)
    store = FeatureStore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        extract_patch_features(bb, shapes, "test", store, **kw)
    monkeypatch.setattr(ModelRunner, "__call__", orig)
    done = extract_patch_features(bb, shapes, "test", store, **kw)
    assert np.array_equal(np.asarray(done.array), np.asarray(ref.array))


def test_end_to_end_learns_generated_task(shapes: ImageSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnbase.features.store import FeatureStore
    from cnnbase.results.records import read_records
    from cnnbase.runner import Context
    from cnnbase.transfer import evaluate, train

    ctx = Context(store=FeatureStore(tmp_path / "store"), results=tmp_path / "records.jsonl", progress=False)
    o = tiny_opts()
    rec = evaluate("tiny_cnn", shapes, opts=o, ctx=ctx, maps=tmp_path / "maps", maps_limit=2)
    from cnnbase.metrics import compute

    y = shapes.labels["test"]
    rng = np.random.default_rng(0)
    chance = np.mean([compute("voc07_map", scores=rng.random(y.shape), labels=y).value for _ in range(200)])
    assert rec["metric"] == "voc07_map" and rec["value"] > 0.9 and rec["value"] > chance + 0.3, (rec["value"], chance)
    assert set(rec["per_class"]) == set(CLASSES)
    assert rec["card"]["name"] == "oquab2014" and rec["card"]["deviations"]  # small grid etc. recorded as deviations
    assert rec["settings"]["test"]["k"] == 5 and rec["head"]["stopped"] in ("schedule", "max_epochs")
    tp = rec["training_patches"]
    assert tp["kept_background"] == round(0.1 * tp["background"]) and tp["positive"] > 0
    assert len(rec["maps"]) >= 2 and all(Path(p).is_file() for p in rec["maps"])
    assert read_records(tmp_path / "records.jsonl")[-1]["run_id"] == rec["run_id"]
    lrs = [h["lr"] for h in json.loads((Path(rec["head"]["file"]).parent / "train.json").read_text())["history"]]
    assert rec["head"]["stopped"] == "schedule" and sorted(set(lrs), reverse=True) == pytest.approx([0.05, 0.005, 0.0005])
    losses = [h["loss"] for h in json.loads((Path(rec["head"]["file"]).parent / "train.json").read_text())["history"]]
    assert losses[-1] < 0.8 * losses[0]

    # another seed: new head, no patch recomputed; same settings: the head is reused
    from cnnbase.features.extract import ModelRunner

    monkeypatch.setattr(ModelRunner, "__call__", lambda self, x: (_ for _ in ()).throw(AssertionError("recomputed")))
    from dataclasses import replace

    t2 = train("tiny_cnn", shapes, opts=replace(o, seed=1, head=replace(o.head, max_epochs=2)), ctx=ctx)
    assert not t2.reused and t2.key != rec["head"]["key"]
    t1 = train("tiny_cnn", shapes, opts=o, ctx=ctx)
    assert t1.reused and t1.key == rec["head"]["key"]

    # a VOC2010+ set (datasets.yaml: voc_area_map) is scored by area AP, the 11-point AP going into extra
    voc12 = replace(shapes, meta={**shapes.meta, "metric": "voc_area_map"})
    rec12 = evaluate("tiny_cnn", voc12, opts=o, ctx=ctx)
    assert rec12["metric"] == "voc_area_map" and rec12["value"] == rec["extra"]["voc_area_map"]
    assert rec12["extra"]["voc07_map"] == rec["value"]


def test_training_resumes_from_checkpoint(shapes: ImageSet, tmp_path: Path) -> None:
    from cnnbase.features.store import FeatureStore
    from cnnbase.runner import Context
    from cnnbase.transfer import train

    o = tiny_opts(max_epochs=6, plateaus=10)

    class Stop(Exception):
        pass

    def stop_after_3(rec):  # type: ignore[no-untyped-def]
        if rec["epoch"] == 3:
            raise Stop

    ctx = Context(store=FeatureStore(tmp_path / "s1"), progress=False)
    with pytest.raises(Stop):
        train("tiny_cnn", shapes, opts=o, ctx=ctx, on_epoch=stop_after_3)
    resumed = train("tiny_cnn", shapes, opts=o, ctx=ctx)
    assert resumed.fit.resumed_from == 3 and len(resumed.fit.history) == 6
    straight = train("tiny_cnn", shapes, opts=o, ctx=Context(store=FeatureStore(tmp_path / "s2"), progress=False))
    assert straight.fit.resumed_from == 0
    for (k, a), (_, b) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_finetune_variant_trains_fc6_fc7(shapes: ImageSet, tmp_path: Path) -> None:
    from cnnbase.features.store import FeatureStore
    from cnnbase.runner import Context
    from cnnbase.transfer import train

    o = tiny_opts(max_epochs=3, finetune_fc67=True)
    t = train("tiny_cnn", shapes, opts=o, ctx=Context(store=FeatureStore(tmp_path / "s"), progress=False))
    assert t.layer == "classifier_input" and t.node == "flatten"
    lins = [m for m in t.model.trunk.modules() if isinstance(m, torch.nn.Linear)]
    assert len(lins) == 2 and lins[0].in_features == 64  # FC6, FC7 of tiny_cnn, trained


# -- CLI -------------------------------------------------------------------------------------------------------------
def test_cli_transfer(shapes: ImageSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_folder: Path) -> None:
    from typer.testing import CliRunner

    from cnnbase.cli import app
    from cnnbase.runner import Context

    runner = CliRunner()
    r = runner.invoke(app, ["transfer", "--help"])
    assert r.exit_code == 0 and "train" in r.output and "evaluate" in r.output
    orig = Context.dataset
    monkeypatch.setattr(Context, "dataset", lambda self, d: shapes if d == "shapes" else orig(self, d))
    args = ["--weights", "random", "--scales", "1,1.6,2.4,3.2", "--patches", "40", "--dtype", "float32", "--workers", "0",
            "--hidden", "256", "--max-epochs", "3", "--device", "cpu", "--store", str(tmp_path / "store"), "--no-progress",
            "--train-batch", "64", "--k", "3"]
    r = runner.invoke(app, ["transfer", "evaluate", "tiny_cnn", "shapes", *args, "--results", str(tmp_path / "r.jsonl")])
    assert r.exit_code == 0, r.output
    assert "voc07_map" in r.output and "deviates from oquab2014" in r.output
    rec = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[-1])
    assert rec["settings"]["patches"]["target"] == 40 and rec["settings"]["sgd"]["lr"] == 0.01  # the card's
    assert rec["settings"]["sgd"]["batch_size"] == 64 and rec["settings"]["test"]["k"] == 3  # renamed / evaluate-only
    r = runner.invoke(app, ["transfer", "train", "tiny_cnn", str(random_folder), "--weights", "random", "--no-progress"])
    assert r.exit_code == 1 and "error:" in r.output and "multilabel" in r.output and "Traceback" not in r.output


def test_bad_images_fail_or_are_skipped(shapes: ImageSet, tmp_path: Path) -> None:
    from cnnbase.backbones import load_backbone
    from cnnbase.errors import CnnbaseError
    from cnnbase.features.store import FeatureStore
    from cnnbase.transfer.features import extract_patch_features

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"<html>not an image</html>")
    samples = [*shapes.samples("test")[:3], Sample("broken", broken)]
    ds = ImageSet(name="withbad", task="multilabel", root=tmp_path, classes=list(CLASSES), splits={"test": samples})
    bb = load_backbone("tiny_cnn", "random")
    kw = dict(layer="fc7", node=bb.resolve_layer("fc7").node, grid=GridSpec(scales=(1.0, 2.0), target=12),
              dtype="float32", workers=0, progress=False, device="cpu")
    with pytest.raises(CnnbaseError, match="broken.png"):
        extract_patch_features(bb, ds, "test", FeatureStore(tmp_path / "s"), **kw)
    pf = extract_patch_features(bb, ds, "test", FeatureStore(tmp_path / "s"), on_bad_image="skip", **kw)
    assert pf.valid.tolist() == [True, True, True, False] and pf.manifest["skipped"][0]["id"] == "broken"
    assert (pf.image_index != 3).all() and np.isfinite(pf.array).all()
