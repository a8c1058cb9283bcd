"""extract → train-svm → evaluate → leaderboard, end to end on generated data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnbase.cli import app
from cnnbase.features.store import FeatureStore
from cnnbase.results import build_table, read_records, render
from cnnbase.runner import Context, FeatureOptions, SVMOptions, evaluate

runner = CliRunner()
OPTS = FeatureOptions(weights="random", workers=0, batch_size=16)


def _ctx(tmp_path: Path) -> Context:
    return Context(store=FeatureStore(tmp_path / "store"), progress=False, results=tmp_path / "records.jsonl")


def test_svm_beats_chance_widely_on_textures(tmp_path: Path, texture_set: Path) -> None:
    """Four texture classes, colours random (mean colour at chance): random AlexNet conv features + SVM learn them."""
    from cnnbase.demo_data import mean_colour_baseline

    assert mean_colour_baseline(texture_set) <= 0.5
    rec = evaluate("alexnet", str(texture_set), layer="conv3", opts=OPTS, ctx=_ctx(tmp_path))
    assert rec["metric"] == "accuracy" and rec["value"] >= 0.6, rec["value"]  # chance 0.25
    assert rec["n_test"] == 16 and rec["n_train"] == 48
    assert set(rec["per_class"]) == {"checker", "horizontal", "rings", "vertical"}


def test_svm_saved_and_reused(tmp_path: Path, texture_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    first = evaluate("tiny_cnn", str(texture_set), opts=OPTS, ctx=ctx)
    assert first["head"]["reused"] is False and Path(first["head"]["file"]).is_file()
    from cnnbase.heads import svm

    monkeypatch.setattr(svm.LinearSVMHead, "fit", lambda *a, **k: pytest.fail("retrained"))
    second = evaluate("tiny_cnn", str(texture_set), opts=OPTS, ctx=ctx)
    assert second["head"]["reused"] is True and second["value"] == first["value"]
    third_svm = SVMOptions(C=0.5)
    monkeypatch.undo()
    third = evaluate("tiny_cnn", str(texture_set), opts=OPTS, svm=third_svm, ctx=ctx)
    assert third["head"]["reused"] is False and third["head"]["key"] != first["head"]["key"]


def _two_colour_list(tmp_path: Path) -> Path:
    """A list file of small images with one or two of the labels red and blue (train 24, test 12)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for split, n in (("train", 24), ("test", 12)):
        for i in range(n):
            labs = ["red"] if i % 3 == 0 else ["blue"] if i % 3 == 1 else ["red", "blue"]
            colour = {"red": (220, 30, 30), "blue": (30, 30, 220)}
            arr = rng.integers(0, 40, (32, 32, 3)).astype(np.int32)
            for j, lab in enumerate(labs):
                arr[:, j * 16:(j + 1) * 16] += np.array(colour[lab])
            p = tmp_path / "imgs" / f"{split}{i}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p)
            lines.append(f"imgs/{p.name}\t{','.join(labs)}\t{split}")
    lst = tmp_path / "set.txt"
    lst.write_text("\n".join(lines) + "\n")
    return lst


def test_multilabel_list_file_voc07_map(tmp_path: Path) -> None:
    """A list-file set with two labels per image is multilabel, scored with VOC07 11-point mAP."""
    rec = evaluate("tiny_cnn", str(_two_colour_list(tmp_path)), opts=OPTS, ctx=_ctx(tmp_path))
    assert rec["task"] == "multilabel" and rec["metric"] == "voc07_map"
    assert 0 <= rec["value"] <= 1 + 1e-12 and set(rec["per_class"]) == {"blue", "red"}  # devkit sums p/11
    assert "voc_area_map" in rec["extra"]


@pytest.mark.parametrize(
    ("task", "metric", "scorer"),
    [("multilabel", "voc07_map", "voc07_ap"), ("multilabel", "voc_area_map", "voc_area_ap"),
     ("attributes", "mean_auc", "roc_auc"), ("multilabel", None, "voc07_ap"), ("classification", "accuracy", None)],
)
def test_cv_picks_c_by_the_benchmarks_own_metric(tmp_path: Path, task: str, metric: str | None, scorer: str | None) -> None:
    """VOC2012 cross-validates C by area AP and UIUC attributes by AUC, as they are scored; VOC2007 by 11-point AP."""
    from cnnbase.datasets.base import ImageSet
    from cnnbase.runner import _cv_scoring

    ds = ImageSet(name="x", task=task, root=tmp_path, classes=["a"], splits={"all": []}, meta={"metric": metric} if metric else {})
    got = _cv_scoring(ds)
    assert (got and got.__name__) == scorer


def test_multilabel_head_key_names_a_cv_metric_other_than_11_point_ap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lst = _two_colour_list(tmp_path)
    ctx, svm = _ctx(tmp_path), SVMOptions(C=(0.1, 1.0))
    first = evaluate("tiny_cnn", str(lst), opts=OPTS, svm=svm, ctx=ctx)
    real = ctx.dataset

    def as_voc2012(d):  # type: ignore[no-untyped-def]
        ds = real(d)
        ds.meta["metric"] = "voc_area_map"
        return ds

    monkeypatch.setattr(ctx, "dataset", as_voc2012)
    second = evaluate("tiny_cnn", str(lst), opts=OPTS, svm=svm, ctx=ctx)
    assert second["head"]["reused"] is False and second["head"]["key"] != first["head"]["key"]
    assert second["metric"] == "voc_area_map"


def test_retrieval_on_labelled_set(tmp_path: Path, texture_set: Path) -> None:
    rec = evaluate("alexnet", str(texture_set), task="retrieval", layer="conv3", opts=OPTS, ctx=_ctx(tmp_path))
    assert rec["metric"] == "oxford_map" and rec["n_queries"] == 16 and rec["n_database"] == 48
    assert rec["value"] > 0.35  # random ranking gives ~0.25 (a quarter of the database is positive)
    assert len(rec["per_query"]) == 16


def test_retrieval_metric_must_read_the_datasets_ground_truth(tmp_path: Path, texture_set: Path) -> None:
    """Checked before any feature is extracted: another benchmark's metric would read missing lists as empty."""
    from cnnbase.datasets.base import ImageSet
    from cnnbase.errors import ConfigError

    ctx = _ctx(tmp_path)
    for metric, says in (("revisited_map", "use oxford_map"), ("voc07_map", "does not score retrieval")):
        with pytest.raises(ConfigError, match=says):
            evaluate("tiny_cnn", str(texture_set), task="retrieval", metric=metric, opts=OPTS, ctx=ctx)
    hol = ImageSet(name="holidays", task="retrieval", root=tmp_path, classes=[], splits={"query": [], "database": []},
                   queries=[], meta={"metric": "holidays_map"})
    with pytest.raises(ConfigError, match="holidays is scored with holidays_map .*not oxford_map"):
        evaluate("tiny_cnn", hol, metric="oxford_map", opts=OPTS, ctx=ctx)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("manifest.json"))


def test_record_is_self_describing(tmp_path: Path, texture_set: Path) -> None:
    ctx = _ctx(tmp_path)
    evaluate("tiny_cnn", str(texture_set), opts=OPTS, ctx=ctx)
    (rec,) = [json.loads(x) for x in (tmp_path / "records.jsonl").read_text().splitlines()]
    for field in ("run_id", "time", "dataset", "split", "backbone", "weights", "layer", "node", "feature_keys",
                  "preprocess", "jitter", "precision", "head", "metric", "value", "per_class", "versions", "n_skipped"):
        assert field in rec, field
    assert rec["weights"] == "random:seed=0"
    assert set(rec["head"]["C_per_class"]) == {"checker", "horizontal", "rings", "vertical"}
    assert {"torch", "torchvision", "sklearn", "numpy", "cnnbase"} <= set(rec["versions"])


def test_leaderboard_formats(tmp_path: Path) -> None:
    recs = [
        {"time": "1", "dataset": "voc2007", "metric": "voc07_map", "value": 0.739, "backbone": "alexnet", "layer": "fc6", "weights": "torchvision:X"},
        {"time": "2", "dataset": "mit67", "metric": "mean_class_accuracy", "value": 0.584, "backbone": "alexnet", "layer": "fc6", "weights": "torchvision:X"},
        {"time": "3", "dataset": "voc2007", "metric": "voc07_map", "value": 0.5, "backbone": "tiny_cnn", "layer": "fc6", "weights": "random:seed=0"},
        {"time": "4", "dataset": "voc2007", "metric": "voc07_map", "value": 0.75, "backbone": "alexnet", "layer": "fc6", "weights": "torchvision:X"},
    ]
    t = build_table(recs)
    assert t.columns == ["model", "voc2007 (voc07_map)", "mit67 (mean_class_accuracy)"]
    assert t.rows == [["alexnet fc6", "75.0", "58.4"], ["tiny_cnn fc6†", "50.0", "–"]]  # newest record wins
    md = render(t, "md")
    assert md.splitlines()[2] == "| alexnet fc6 | 75.0 | 58.4 |" and "† random weights" in md
    assert render(t, "csv").splitlines()[1] == "alexnet fc6,75.0,58.4"
    tex = render(t, "latex")
    assert r"\begin{tabular}{lrr}" in tex and r"tiny\_cnn fc6$^\dagger$ & 50.0 & -- \\" in tex
    ref = {"name": "razavian2014", "rows": {"CNN-SVM": {"voc2007": 73.9}}}
    t2 = build_table(recs, reference=ref)
    assert t2.rows[0][:2] == ["CNN-SVM [razavian2014]", "73.9"] and t2.rows[1][1] == "75.0 (+1.1)"
    aug = {**recs[3], "time": "5", "label": "CNNaug-SVM", "value": 0.78}
    ref2 = {"name": "razavian2014", "rows": {"CNN-SVM": {"voc2007": 73.9}, "CNNaug-SVM": {"voc2007": 77.2}}}
    t3 = build_table([*recs, aug], reference=ref2)
    assert ["alexnet fc6 (CNNaug-SVM)", "78.0 (+0.8)", "–"] in t3.rows  # compared with its own variant's row


def test_cli_train_evaluate_leaderboard(tmp_path: Path, texture_set: Path) -> None:
    common = ["--weights", "random", "--store", str(tmp_path / "store"), "--workers", "0", "--no-progress"]
    r = runner.invoke(app, ["train-svm", "tiny_cnn", str(texture_set), *common], catch_exceptions=False)
    assert r.exit_code == 0 and "trained 4 SVM(s)" in r.stdout
    res = tmp_path / "r.jsonl"
    r = runner.invoke(app, ["evaluate", "tiny_cnn", str(texture_set), "--results", str(res), *common], catch_exceptions=False)
    assert r.exit_code == 0 and "accuracy =" in r.stdout
    r = runner.invoke(app, ["evaluate", "tiny_cnn", str(texture_set), "--task", "retrieval", "--results", str(res), *common],
                      catch_exceptions=False)
    assert r.exit_code == 0 and "oxford_map =" in r.stdout
    for fmt in ("table", "md", "csv", "latex"):
        r = runner.invoke(app, ["leaderboard", "--results", str(res), "--format", fmt], catch_exceptions=False)
        assert r.exit_code == 0 and ("tiny_cnn fc6" in r.stdout or r"tiny\_cnn fc6" in r.stdout)
    assert len(read_records(res)) == 2


def test_demo_runs_offline(tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--model", "tiny_cnn", "--per-class", "8", "--no-progress"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.stdout
    assert "| tiny_cnn fc6 (demo)† |" in r.stdout and "random weights" in r.stdout


# ------------------------------------------------------------------------------------------ splits and bad runs


def test_empty_split_is_refused_before_any_entry_is_begun(tmp_path: Path) -> None:
    """Classes of 3-4 images give the automatic 80/20 split no test image; an entry of nothing could never finish."""
    from _images import write_images

    from cnnbase.errors import ConfigError
    from cnnbase.runner import extract

    root = tmp_path / "small"
    write_images(root, {"a": 4, "b": 3})
    ctx = _ctx(tmp_path)
    with pytest.raises(ConfigError, match="small/test has no images; the automatic split puts every fifth image"):
        extract("tiny_cnn", str(root), opts=OPTS, ctx=ctx)
    assert [e.fields["split"] for e in extract("tiny_cnn", str(root), splits=["train"], opts=OPTS, ctx=ctx)] == ["train"]


def test_train_val_layout_tests_on_val_and_overlapping_splits_are_refused(tmp_path: Path) -> None:
    from _images import write_images

    from cnnbase.errors import ConfigError

    root = tmp_path / "tv"
    write_images(root, {"ants": 6, "bees": 6}, split="train")
    write_images(root, {"ants": 2, "bees": 2}, split="val", seed=1)
    ctx = _ctx(tmp_path)
    rec = evaluate("tiny_cnn", str(root), opts=OPTS, ctx=ctx)
    assert (rec["train_split"], rec["split"], rec["n_test"]) == ("train", "val", 4)
    flat = tmp_path / "flat"
    write_images(flat, {"a": 5, "b": 5})
    with pytest.raises(ConfigError, match="training split 'all' holds 2 image\\(s\\) of the test split 'test'"):
        evaluate("tiny_cnn", str(flat), train_split="all", test_split="test", opts=OPTS, ctx=ctx)


def test_metric_must_fit_the_labels(tmp_path: Path, texture_set: Path) -> None:
    """A multilabel metric on single-label data (or the reverse) is a one-line error, not a TypeError."""
    from cnnbase.errors import ConfigError

    for metric in ("voc07_map", "mean_auc"):
        with pytest.raises(ConfigError, match=f"metric {metric} does not score textures \\(classification: one label"):
            evaluate("tiny_cnn", str(texture_set), metric=metric, opts=OPTS, ctx=_ctx(tmp_path))


def test_no_test_image_with_features_is_one_error(tmp_path: Path) -> None:
    from _images import write_images

    from cnnbase.errors import ConfigError

    root = tmp_path / "bad"
    write_images(root, {"a": 5, "b": 5})
    for cls in ("a", "b"):
        (root / cls / "img 04.jpg").write_bytes(b"not a jpeg")  # the fifth image of each class: the test split
    with pytest.raises(ConfigError, match="bad/test: none of its 2 test image\\(s\\) has features"):
        evaluate("tiny_cnn", str(root), opts=replace(OPTS, on_bad_image="skip"), ctx=_ctx(tmp_path))


@pytest.mark.parametrize(("field", "value", "says"), [("batch_size", 0, "--batch-size 0"), ("workers", -1, "--workers -1")])
def test_counts_below_one_are_refused(tmp_path: Path, random_folder: Path, field: str, value: int, says: str) -> None:
    from cnnbase.errors import ConfigError
    from cnnbase.runner import extract

    with pytest.raises(ConfigError, match=says):
        extract("tiny_cnn", str(random_folder), opts=replace(OPTS, **{field: value}), ctx=_ctx(tmp_path))


def test_one_class_training_set_names_the_class(tmp_path: Path) -> None:
    from _images import write_images

    from cnnbase.errors import ConfigError

    root = tmp_path / "one"
    write_images(root, {"ants": 3}, split="train")
    write_images(root, {"ants": 1, "bees": 1}, split="test", seed=1)
    with pytest.raises(ConfigError, match="one/train: the training images with features are all of one class \\('ants'\\)"):
        evaluate("tiny_cnn", str(root), opts=OPTS, ctx=_ctx(tmp_path))
