"""Protocol cards: schema errors (one line naming the key), hashing, overrides → deviations, reference files,
spatial-search patch geometry, and the skipping of absent datasets."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnbase.errors import ConfigError
from cnnbase.protocol import (
    apply_overrides,
    card_hash,
    cli_overrides,
    deviations,
    load_card,
    resolve_layer,
    resolve_preprocess,
    run_card,
    validate_card,
)

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "tasks" / "razavian2014.yaml"


@pytest.fixture(scope="module")
def card() -> dict:
    return load_card(CARD)


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    from cnnbase.backbones import load_backbone

    return load_backbone("tiny_cnn", "random")


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "card.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


# ------------------------------------------------------------------------------------------------- the card


def test_card_loads_by_name_and_path_and_pins_the_paper(card: dict) -> None:
    assert load_card("razavian2014")["datasets"] == card["datasets"]
    d = card["datasets"]
    assert {n: (s["mode"], s["C"]) for n, s in d.items() if s["kind"] == "svm"} == {
        "voc2007": ("ovr", 0.2), "mit67": ("ovo", 2.0), "cub200": ("ovo", 2.0), "flowers102": ("ovo", 2.0),
        "apascal": ("ovr", 0.2), "ayahoo": ("ovr", 0.2), "h3d": ("ovr", 0.2)}
    assert d["voc2007"]["metric"] == "voc07_map" and d["mit67"]["metric"] == "mean_class_accuracy"
    assert d["cub200"]["options"]["box_scale"] == 1.5 and d["h3d"]["options"]["box_scale"] == 1.5
    assert {n: d[n]["whitening_set"] for n in ("oxford5k", "paris6k", "holidays", "ukbench")} == {
        "oxford5k": "paris6k", "paris6k": "oxford5k", "holidays": "paris6k", "ukbench": "holidays"}
    assert d["oxford5k"]["query"] == "crop" and d["ukbench"]["metric"] == "ukbench_score"
    r = card["retrieval"]
    assert (r["spatial"]["reference_levels"], r["spatial"]["query_levels"], r["pca"]["dim"], r["pca"]["power"]) == (4, 3, 500, 2.0)
    assert card["jitter"]["rotations"] == [-10.0, 10.0] and card["svm"]["c_selection"] == "paper"
    assert set(card["variants"]) == {"CNN-SVM", "CNNaug-SVM", "CNN", "CNN-ss", "CNNaug-ss"}


def test_card_hash_is_sha256_of_canonical_json(card: dict) -> None:
    import hashlib
    import json

    h = card_hash(card)
    clean = {k: v for k, v in card.items() if not k.startswith("_")}
    assert h == hashlib.sha256(json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()
    reordered = dict(reversed(list(card.items())))
    assert card_hash({**reordered, "_path": "elsewhere"}) == h  # key order and private keys do not count
    changed = copy.deepcopy(card)
    changed["datasets"]["voc2007"]["C"] = 0.3
    assert card_hash(changed) != h


def _mutate(card: dict, path: str, value: object) -> dict:
    out = copy.deepcopy({k: v for k, v in card.items() if not k.startswith("_")})
    node = out
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "key", "says"),
    [
        ("colour", "red", "colour", "unknown key"),
        ("name", _DELETE, "name", "required key is missing"),
        ("protocol", "mine", "protocol", "expected one of offtheshelf, transfer"),
        ("datasets.voc2007.mode", "ova", "datasets.voc2007.mode", "expected one of ovr, ovo"),
        ("datasets.voc2007.C", -1, "datasets.voc2007.C", "positive number"),
        ("datasets.voc2007.C", "big", "datasets.voc2007.C", "positive number"),
        ("datasets.mit67.variants", ["CNN-SVM", "CNNmax"], "datasets.mit67.variants[1]", "unknown variant 'CNNmax'"),
        ("datasets.mit67.variants", ["CNN-ss"], "datasets.mit67.variants[0]", "is a retrieval variant"),
        ("datasets.mit67.metric", "top5", "datasets.mit67.metric", "unknown metric 'top5'"),
        ("datasets.mit67.metric", "voc07_map", "datasets.mit67.metric", "multilabel metric"),
        ("datasets.voc2007.mode", "ovo", "datasets.voc2007.mode", "one-vs-one needs one class per image"),
        ("datasets.nowhere", {"kind": "svm"}, "datasets.nowhere", "not a dataset of datasets.yaml"),
        ("datasets.oxford5k.whitening_set", "oxford5k", "datasets.oxford5k.whitening_set", "another dataset"),
        ("datasets.oxford5k.whitening_set", "voc2007", "datasets.oxford5k.whitening_set", "not a retrieval dataset"),
        ("datasets.holidays.query", "crop", "datasets.holidays.query", "no query boxes"),
        ("datasets.ukbench.metric", "holidays_map", "datasets.ukbench.metric", "ukbench is scored with ukbench_score"),
        ("datasets.oxford5k.metric", "revisited_map", "datasets.oxford5k.metric", "oxford5k is scored with oxford_map"),
        ("datasets.holidays.whitening_set", _DELETE, "datasets.holidays.whitening_set", "required key is missing"),
        ("jitter.rotations", [-5.0, 5.0], "jitter.rotations", "rotates by [-10.0, 10.0]"),
        ("svm.c_selection", "guess", "svm.c_selection", "expected one of paper, cv"),
        ("retrieval.spatial.query_levels", 0, "retrieval.spatial.query_levels", "integer in 1..10"),
        ("retrieval.pca.whiten", "yes", "retrieval.pca.whiten", "true or false"),
        ("features.layer", {"alexnet": "fc6"}, "features.layer", "default"),
        ("features.preprocess", "square:big", "features.preprocess", "bad --preprocess"),
        ("variants.CNN-SVM.loss", "log", "variants.CNN-SVM.loss", "expected one of hinge, squared_hinge"),
        ("datasets.voc2007.colour", 1, "datasets.voc2007.colour", "unknown key"),
    ],
)
def test_schema_errors_are_one_line_naming_the_key(card: dict, tmp_path: Path, path: str, value: object, key: str, says: str) -> None:
    p = _write(tmp_path, _mutate(card, path, value))
    with pytest.raises(ConfigError) as exc:
        load_card(p)
    msg = str(exc.value)
    assert "\n" not in msg and f": {key}: " in msg and says in msg, msg
    assert msg.startswith(f"card {p}: ")


@pytest.mark.parametrize("query", ["crop", "whole"])
def test_revisited_queries_crop_as_the_card_says(card: dict, tmp_path: Path, query: str) -> None:
    """revisitop crops each query to its gnd box (the official rule); a card says so, and ``whole`` really is whole."""
    from cnnbase.protocol import _adapter_options

    spec = {**card["datasets"]["oxford5k"], "query": query, "metric": "revisited_map"}
    loaded = load_card(_write(tmp_path, _mutate(card, "datasets.roxford5k", spec)))
    assert loaded["datasets"]["roxford5k"]["query"] == query
    assert _adapter_options("roxford5k", loaded["datasets"]["roxford5k"], None) == {"query_box": query == "crop"}


def test_unreadable_or_missing_cards(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: bad YAML at line 2, column 1: .*; fix the syntax there"):
        load_card(bad)
    with pytest.raises(ConfigError, match="no protocol card 'nosuch'"):
        load_card("nosuch")
    with pytest.raises(ConfigError, match="not found"):
        load_card(tmp_path / "absent.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_card(lst)


def test_transfer_cards_are_handed_to_the_transfer_module() -> None:
    c = load_card("oquab2014")
    assert c["protocol"] == "transfer" and c["name"] == "oquab2014"


# ------------------------------------------------------------------------------------------------- overrides


def test_cli_overrides_map_options_to_card_paths(card: dict) -> None:
    o = cli_overrides(card, layer="fc7", C=1.0, preprocess="square:221", sets=["retrieval.pca.dim=256", "datasets.voc2007.difficult=negative"])
    svm_sets = {n for n, s in card["datasets"].items() if s["kind"] == "svm"}
    assert {k for k in o if k.endswith(".C")} == {f"datasets.{n}.C" for n in svm_sets}
    assert o["features.layer"] == "fc7" and o["features.preprocess"] == "square:221"
    assert o["retrieval.pca.dim"] == 256 and o["datasets.voc2007.difficult"] == "negative"
    grid = cli_overrides(card, C=(0.1, 1.0))
    assert grid == {"svm.c_selection": "cv", "svm.cv_grid": [0.1, 1.0]}
    with pytest.raises(ConfigError, match="--set KEY=VALUE"):
        cli_overrides(card, sets=["retrieval.pca.dim"])


def test_overrides_are_validated_and_become_deviations(card: dict, tiny) -> None:  # type: ignore[no-untyped-def]
    eff = apply_overrides(card, {"features.layer": "fc7", "datasets.voc2007.C": 1.0, "svm.c_selection": "cv"})
    devs = deviations(card, eff, tiny)
    assert devs == {
        "datasets.voc2007.C": "datasets.voc2007.C: 0.2 → 1.0",
        "features.layer": "features.layer: fc6 → fc7",
        "svm.c_selection": "svm.c_selection: paper → cv",
    }
    # what the card already says is no deviation, however it is spelled
    same = apply_overrides(card, {"features.layer": "fc6", "features.preprocess": "square:32,bicubic"})
    assert deviations(card, same, tiny) == {}
    assert resolve_layer(card, tiny) == "fc6" and resolve_preprocess(card, tiny) == "square:32,bicubic"
    with pytest.raises(ConfigError, match=r"datasets.voc2007.mode: expected one of ovr, ovo"):
        apply_overrides(card, {"datasets.voc2007.mode": "ova"})
    with pytest.raises(ConfigError, match="the card has no section 'nosuch'"):
        apply_overrides(card, {"nosuch.key": 1})


def test_layer_per_backbone_family(card: dict) -> None:
    from cnnbase.backbones import load_backbone

    resnet = load_backbone("resnet18", "random")
    assert resolve_layer(card, resnet) == "pool"
    assert resolve_preprocess(card, resnet) == "square:224,bicubic"
    assert resolve_layer(apply_overrides(card, {"features.layer": "layer4"}), resnet) == "layer4"


# ------------------------------------------------------------------------------------------------- references


@pytest.mark.parametrize("name", ["razavian2014", "oquab2014"])
def test_reference_files_match_datasets_and_per_class_means(name: str) -> None:
    from cnnbase.cli.leaderboard import _load_reference
    from cnnbase.config import load_dataset_configs
    from cnnbase.metrics import METRICS

    ref = _load_reference(name)
    configs = load_dataset_configs(ROOT / "datasets.yaml")
    assert ref["name"] == name and ref["rows"]
    for label, vals in ref["rows"].items():
        for ds in vals:
            assert ds in configs and ds in ref["metrics"], (label, ds)
    assert all(metric in METRICS.list() for metric in ref["metrics"].values())
    for label, by_ds in ref["per_class"].items():
        for ds, per in by_ds.items():
            assert abs(np.mean(list(per.values())) - ref["rows"][label][ds]) < 0.06, (label, ds)  # printed to 0.1
    if name == "razavian2014":
        card = load_card("razavian2014")
        for ds, metric in ref["metrics"].items():
            assert card["datasets"][ds]["metric"] == metric
        for label, vals in ref["rows"].items():
            assert label in card["variants"]
            assert all(label in card["datasets"][ds]["variants"] for ds in vals)
        from cnnbase.datasets.attributes import H3D_ATTRIBUTES

        for label in ("CNN-SVM", "CNNaug-SVM"):
            assert list(ref["per_class"][label]["voc2007"]) == list(_voc_classes())
            assert list(ref["per_class"][label]["h3d"]) == list(H3D_ATTRIBUTES)
        assert ref["rows"]["CNNaug-ss"]["ukbench"] == pytest.approx(91.1 * 4 / 100)


def _voc_classes() -> tuple[str, ...]:
    from cnnbase.datasets.voc import VOC_CLASSES

    return VOC_CLASSES


def test_leaderboard_reference_loader_rejects_malformed(tmp_path: Path) -> None:
    from cnnbase.cli.leaderboard import _load_reference

    p = tmp_path / "ref.yaml"
    p.write_text("name: x\nrows: [1, 2]\n")
    with pytest.raises(ConfigError, match="rows:"):
        _load_reference(str(p))


# ------------------------------------------------------------------------------------------------- spatial patches


def test_patch_squares_and_padding() -> None:
    from cnnbase.backbones import Preprocess
    from cnnbase.features.spatial import fill_colour, n_patches, patch_squares, patch_views, square_crop

    assert [n_patches(h) for h in (1, 2, 3, 4)] == [1, 5, 14, 30]
    sq = patch_squares(60, 40, 4)
    assert len(sq) == 30 and all(b[2] - b[0] == b[3] - b[1] for b in sq)
    assert sq[0] == (0, -10, 60, 50)  # the whole landscape image: overhangs 10 px above and below
    assert patch_squares(60, 40, 3) == sq[:14]  # query levels are a prefix of the reference levels
    img = Image.new("RGB", (60, 40), (10, 200, 30))
    fill = fill_colour(Preprocess())
    out = np.asarray(square_crop(img, sq[0], fill))
    assert out.shape == (60, 60, 3)
    assert (out[:10] == fill).all() and (out[50:] == fill).all() and (out[10:50] == (10, 200, 30)).all()
    inside = (5, 5, 20, 20)
    assert np.array_equal(np.asarray(square_crop(img, inside, fill)), np.asarray(img.crop(inside)))
    v = patch_views(img, 2, Preprocess(mode="square", crop=16, resize=16))
    assert tuple(v.shape) == (5, 3, 16, 16) and v.dtype.__str__() == "torch.uint8"


# ------------------------------------------------------------------------------------------------- running


def test_absent_datasets_are_skipped_with_a_line_each(tmp_path: Path) -> None:
    from cnnbase.runner import Context, FeatureOptions

    cfg = yaml.safe_load((ROOT / "datasets.yaml").read_text())
    for entry in cfg["datasets"].values():
        entry["root"] = str(tmp_path / "nothing" / entry["root"])
    dfile = tmp_path / "datasets.yaml"
    dfile.write_text(yaml.safe_dump(cfg))
    lines: list[str] = []
    ctx = Context(results=tmp_path / "r.jsonl", progress=False, datasets_file=str(dfile))
    recs = run_card("razavian2014", "tiny_cnn", weights="random", opts=FeatureOptions(workers=0), ctx=ctx, log=lines.append)
    assert recs == [] and len(lines) == 11
    assert all(line.startswith("skipped ") and "not found" in line and "cnnbase datasets download" in line for line in lines)
    with pytest.raises(ConfigError, match="'CNNmax' is not a variant of card razavian2014"):
        run_card("razavian2014", "tiny_cnn", weights="random", variants=["CNNmax"], ctx=ctx, log=lines.append)


def test_validate_card_accepts_a_dict(card: dict) -> None:
    validate_card(card)
    with pytest.raises(ConfigError, match=r"card mine: features: required key is missing"):
        validate_card({k: v for k, v in _mutate(card, "name", "mine").items() if k != "features"})


def test_patch_extraction_resumes_after_a_crash_and_matches_a_clean_run(tmp_path: Path, random_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnbase.features import extract as engine
    from cnnbase.features.spatial import extract_patches
    from cnnbase.features.store import FeatureStore
    from cnnbase.runner import Context, FeatureOptions

    opts = FeatureOptions(weights="random", workers=0, batch_size=5, shard_size=2, precision="fp32", preprocess="square:32")
    clean = extract_patches("tiny_cnn", str(random_folder), split="all", levels=2, opts=opts,
                            ctx=Context(store=FeatureStore(tmp_path / "a"), progress=False))
    assert clean.array.shape == (15, 5, 32) and clean.manifest["views"] == 5 and clean.manifest["fields"]["jitter"] == {"name": "spatial", "levels": 2, "crop_side": 2 / 3, "rotations": [], "layout_version": 1}
    ctx = Context(store=FeatureStore(tmp_path / "b"), progress=False)
    real = engine.ModelRunner.__call__
    calls = {"n": 0}

    def crash_after_two(self, x, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(self, x, **kw)

    monkeypatch.setattr(engine.ModelRunner, "__call__", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        extract_patches("tiny_cnn", str(random_folder), split="all", levels=2, opts=opts, ctx=ctx)
    calls["n"] = -100  # no crash now; count the batches the resumed run computes
    again = extract_patches("tiny_cnn", str(random_folder), split="all", levels=2, opts=opts, ctx=ctx)
    assert calls["n"] == -100 + 13  # 2 images per shard: shard 0 was kept, 13 images (one per batch) remained
    np.testing.assert_array_equal(np.asarray(again.array), np.asarray(clean.array))
    assert again.key == clean.key  # same key in both stores: the layout, not the run, decides it
