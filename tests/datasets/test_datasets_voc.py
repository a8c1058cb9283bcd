"""PASCAL VOC reader against fake devkits (CRLF, padded labels, XML objects, unlabelled 2012 test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnbase.datasets.voc import VOC_CLASSES, read_voc
from cnnbase.errors import DatasetError


@pytest.mark.parametrize("crlf", [True, False])
def test_splits_labels_and_paths(tmp_path: Path, fake, crlf: bool) -> None:
    f = fake.make_voc(tmp_path, crlf=crlf)
    ds = read_voc(tmp_path, year=2007)
    assert ds.task == "multilabel" and ds.classes == list(VOC_CLASSES)
    assert list(ds.splits) == ["train", "val", "trainval", "test"]
    for split, ids in f["ids"].items():
        assert [s.id for s in ds.splits[split]] == ids
        np.testing.assert_array_equal(ds.labels[split], f["labels"][split])
        assert ds.labels[split].dtype == np.int8
    s = ds.splits["train"][0]
    assert s.path == f["voc"] / "JPEGImages" / "000005.jpg" and s.path.is_file() and s.box is None
    assert set(np.unique(ds.labels["test"])) == {-1, 0, 1}


@pytest.mark.parametrize("where", ["parent", "devkit", "voc"])
def test_root_may_be_any_level(tmp_path: Path, fake, where: str) -> None:
    f = fake.make_voc(tmp_path)
    root = {"parent": tmp_path, "devkit": tmp_path / "VOCdevkit", "voc": f["voc"]}[where]
    assert len(read_voc(root, year=2007).splits["test"]) == 3


def test_objects_from_xml(tmp_path: Path, fake) -> None:
    f = fake.make_voc(tmp_path)
    ds = read_voc(tmp_path)
    objs = ds.meta["objects"]["000005"]
    expect = f["objects"]["000005"]
    assert [o["class"] for o in objs] == [e[0] for e in expect]
    first = objs[0]
    assert first["bndbox"] == (3.0, 4.0, 30.0, 40.0)
    assert first["box"] == (2.0, 3.0, 30.0, 40.0)  # 1-based inclusive -> PIL crop box
    assert first["truncated"] is True and first["difficult"] is False
    assert objs[1]["difficult"] is True and objs[1]["class_index"] == VOC_CLASSES.index(expect[1][0])
    assert ds.meta["image_size"]["000005"] == (60 + 3, 50)
    assert ds.meta["annotations_missing"] == []


def test_objects_optional(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path, xml=False)
    assert "objects" not in read_voc(tmp_path).meta
    with pytest.raises(DatasetError, match="Annotations.*objects=True"):
        read_voc(tmp_path, objects=True)
    fake.make_voc(tmp_path / "b")
    (tmp_path / "b" / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml").unlink()
    assert read_voc(tmp_path / "b").meta["annotations_missing"] == ["000001"]
    assert "objects" not in read_voc(tmp_path / "b", objects=False).meta


def test_voc2012_test_has_no_labels(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path, year=2012, test_labels=False)
    ds = read_voc(tmp_path, year=2012)
    assert "test" in ds.splits and "test" not in ds.labels
    assert ds.meta["unlabelled_splits"] == ["test"]
    assert "never published" in ds.meta["notes"][0]
    with pytest.raises(DatasetError, match=r"voc2012 split 'test' has no labels: .*never published.*evaluate on val"):
        ds.labels["test"]
    with pytest.raises(KeyError):
        ds.labels["test"]
    with pytest.raises(KeyError):
        ds.labels["nosuch"]
    assert ds.labels.get("test") is None and ds.labels["train"].shape == (3, 20)


def _main(tmp_path: Path) -> Path:
    return tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"


def test_error_no_devkit(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no VOC2007 devkit found.*cnnbase datasets download voc2007"):
        read_voc(tmp_path)


def test_error_bad_label(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path, crlf=False)
    f = _main(tmp_path) / "cat_train.txt"
    f.write_text("000005  1\n000007  2\n000009 -1\n")
    with pytest.raises(DatasetError, match=r"cat_train\.txt:2: label 2 is not one of 1, -1, 0"):
        read_voc(tmp_path)


def test_error_malformed_line(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path, crlf=False)
    (_main(tmp_path) / "dog_val.txt").write_text("000012 1\n000016\n")
    with pytest.raises(DatasetError, match=r"dog_val\.txt:2: expected 2 fields"):
        read_voc(tmp_path)


def test_error_unknown_image_and_missing_label(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path, crlf=False)
    (_main(tmp_path) / "cow_test.txt").write_text("000001 1\n000099 -1\n000003 1\n")
    with pytest.raises(DatasetError, match=r"cow_test\.txt:2: image 000099 is not listed in test\.txt"):
        read_voc(tmp_path)
    (_main(tmp_path) / "cow_test.txt").write_text("000001 1\n000003 1\n")
    with pytest.raises(DatasetError, match=r"cow_test\.txt: no label for image 000002"):
        read_voc(tmp_path)


def test_error_missing_class_file(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path)
    (_main(tmp_path) / "sheep_trainval.txt").unlink()
    with pytest.raises(DatasetError, match=r"sheep_trainval\.txt: file not found although other classes"):
        read_voc(tmp_path)


def test_error_duplicate_id(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path, crlf=False)
    (_main(tmp_path) / "train.txt").write_text("000005\n000007\n000005\n")
    with pytest.raises(DatasetError, match=r"train\.txt:3: image id 000005 repeats line 1"):
        read_voc(tmp_path)


def test_error_unknown_class_in_xml(tmp_path: Path, fake) -> None:
    f = fake.make_voc(tmp_path)
    x = f["voc"] / "Annotations" / "000002.xml"
    x.write_text(x.read_text().replace("<name>bicycle</name>", "<name>unicorn</name>", 1).replace("<name>bird</name>", "<name>unicorn</name>", 1))
    with pytest.raises(DatasetError, match=r"000002\.xml: object \d has unknown class 'unicorn'"):
        read_voc(tmp_path)
    x.write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"000002\.xml: not readable XML"):
        read_voc(tmp_path)


def test_path_escaping_root_is_refused(tmp_path: Path, fake) -> None:
    fake.make_voc(tmp_path, crlf=False)
    (_main(tmp_path) / "train.txt").write_text("000005\n../../../../etc/passwd\n000009\n")
    for cls in VOC_CLASSES:
        (_main(tmp_path) / f"{cls}_train.txt").write_text("000005 1\n../../../../etc/passwd 1\n000009 1\n")
    with pytest.raises(DatasetError, match=r"train\.txt:2: path .* points outside the dataset root"):
        read_voc(tmp_path)
