"""UIUC aPascal/aYahoo and Berkeley people-attributes ("H3D") readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnbase.datasets.attributes import H3D_ATTRIBUTES, read_people_attributes, read_uiuc_attributes
from cnnbase.errors import ConfigError, DatasetError


def test_apascal_one_sample_per_object(tmp_path: Path, fake) -> None:
    fake.make_uiuc(tmp_path)
    ds = read_uiuc_attributes(tmp_path, subset="apascal")
    assert ds.task == "attributes" and ds.classes == fake.ATTRS  # names with spaces kept whole
    train = ds.splits["train"]
    assert [s.id for s in train] == ["2008_000008.jpg#0", "2008_000008.jpg#1", "2008_000015.jpg#0"]
    assert train[0].path == train[1].path == tmp_path / "VOCdevkit/VOC2008/JPEGImages/2008_000008.jpg"
    assert train[0].box == (53.0, 86.0, 71.0, 99.0)  # 1-based inclusive -> PIL crop box
    assert train[1].box == (0.0, 0.0, 20.0, 30.0)
    np.testing.assert_array_equal(ds.labels["train"], [[-1, 1, 1, -1], [1, -1, -1, -1], [-1, -1, -1, 1]])
    assert ds.labels["train"].dtype == np.int8
    assert ds.meta["object_class"]["train"].tolist() == [0, 1, 2]
    assert ds.meta["object_classes"][:3] == ["horse", "person", "bottle"]
    assert len(ds.splits["test"]) == 1 and train[0].path.is_file()


def test_ayahoo_trains_on_apascal(tmp_path: Path, fake) -> None:
    fake.make_uiuc(tmp_path)
    ds = read_uiuc_attributes(tmp_path / "attribute_data", subset="ayahoo", pascal_images="../VOCdevkit/VOC2008/JPEGImages", yahoo_images="../ayahoo_test_images")
    assert len(ds.splits["train"]) == 3
    assert [s.id for s in ds.splits["test"]] == ["donkey_1.jpg#0", "donkey_1.jpg#1", "mug_3.jpg#0"]
    assert ds.splits["test"][2].path.name == "mug_3.jpg"
    assert ds.meta["object_class"]["test"].tolist() == [3, 3, 4]


@pytest.mark.parametrize(
    "line, match",
    [
        ("2008_000099.jpg unicorn 1 1 5 5 0 0 0 0", r"apascal_test\.txt:1: unknown class 'unicorn'"),
        ("2008_000099.jpg horse 1 1 5 5 0 0 0 2", r"apascal_test\.txt:1: attribute 4 \(Vert Cyl\) is '2'"),
        ("2008_000099.jpg horse 1 1 5 5 0 0 0", r"apascal_test\.txt:1: expected 10 fields"),
        ("2008_000099.jpg horse 9 1 5 5 0 0 0 1", r"apascal_test\.txt:1: box .* has xmax < xmin"),
        ("2008_000099.jpg horse 1 a 5 5 0 0 0 1", r"apascal_test\.txt:1: ymin 'a' is not a number"),
        ("2008_000008.jpg horse 1 1 5 5 0 0 0 1", r"apascal_test\.txt:1: sample 2008_000008\.jpg#0 was already read from .*apascal_train\.txt:1"),
    ],
)
def test_uiuc_errors(tmp_path: Path, fake, line: str, match: str) -> None:
    fake.make_uiuc(tmp_path, images=False)
    (tmp_path / "attribute_data" / "apascal_test.txt").write_text(line + "\n")
    with pytest.raises(DatasetError, match=match):
        read_uiuc_attributes(tmp_path)


def test_uiuc_missing_and_bad_subset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="attribute_names.txt not found"):
        read_uiuc_attributes(tmp_path)
    with pytest.raises(ConfigError):
        read_uiuc_attributes(tmp_path, subset="apascal2")


def test_people_attributes(tmp_path: Path, fake) -> None:
    fake.make_people(tmp_path)
    ds = read_people_attributes(tmp_path)
    assert ds.classes == list(H3D_ATTRIBUTES) and ds.task == "attributes"
    tr = ds.splits["train"]
    assert [s.id for s in tr] == ["train/00001.jpg#0", "train/00002.jpg#0"]
    assert tr[0].path == tmp_path / "train" / "00001.jpg"
    # (10, 12, 30, 42) enlarged x1.5 about (20, 27) -> (5, 19.5-..): clipped to the 40x36 image
    assert tr[0].box == pytest.approx((5.0, 4.5, 35.0, 36.0))
    assert tr[1].box == pytest.approx((0.0, 0.0, 40.0, 36.0))
    assert ds.labels["train"][0].tolist() == [1, -1, 0, 1, -1, 1, -1, 1, 1]
    te = ds.splits["test"]
    assert te[1].box is None and ds.meta["nan_boxes"] == ["test/00002.jpg#0"]


def test_people_attributes_errors(tmp_path: Path, fake) -> None:
    fake.make_people(tmp_path, images=False)
    (tmp_path / "test" / "labels.txt").write_text("00001.jpg 1 1 4 4 1 1 1 1 1 1 1 1 5\n")
    with pytest.raises(DatasetError, match=r"test/labels\.txt:1: label 5 is not one of 1, -1, 0"):
        read_people_attributes(tmp_path)
    (tmp_path / "test" / "labels.txt").write_text("abc.jpg 1 1 4 4 1 1 1 1 1 1 1 1 1\n")
    with pytest.raises(DatasetError, match=r"does not start with a 5-digit image number"):
        read_people_attributes(tmp_path)
    (tmp_path / "train" / "labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"train/labels\.txt: file not found"):
        read_people_attributes(tmp_path)
