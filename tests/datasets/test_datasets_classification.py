"""MIT-67, CUB-200-2011 and Flowers-102 readers against fake official layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnbase.datasets.cub import read_cub
from cnnbase.datasets.flowers import read_flowers
from cnnbase.datasets.mit67 import read_mit67
from cnnbase.errors import ConfigError, DatasetError

# ---------------------------------------------------------------------------------------------------- MIT-67


def test_mit67(tmp_path: Path, fake) -> None:
    f = fake.make_mit67(tmp_path)
    ds = read_mit67(tmp_path)
    assert ds.classes == f["classes"]
    assert [s.id for s in ds.splits["train"]] == f["train"]
    assert [s.id for s in ds.splits["test"]] == f["test"]
    assert ds.labels["train"].tolist() == [0, 1, 0, 2] and ds.labels["test"].tolist() == [1, 2]
    s = ds.splits["train"][0]
    assert s.id == "airport_inside/airport inside 01.jpg" and s.path.is_file()  # the space survives


def test_mit67_crlf(tmp_path: Path, fake) -> None:
    fake.make_mit67(tmp_path)
    for name in ("TrainImages.txt", "TestImages.txt"):
        p = tmp_path / name
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    assert [s.id for s in read_mit67(tmp_path).splits["test"]] == ["gameroom/game room.jpg", "winecellar/w 3.jpg"]


def test_mit67_errors(tmp_path: Path, fake) -> None:
    with pytest.raises(DatasetError, match=r"TrainImages\.txt: file not found.*cnnbase datasets download mit67"):
        read_mit67(tmp_path)
    fake.make_mit67(tmp_path, images=False)
    (tmp_path / "TestImages.txt").write_text("gameroom/a.jpg\nno_class_here.jpg\n")
    with pytest.raises(DatasetError, match=r"TestImages\.txt:2: expected '<class>/<image file>'"):
        read_mit67(tmp_path)
    (tmp_path / "TestImages.txt").write_text("gameroom/bt_1.jpg\n")
    with pytest.raises(DatasetError, match=r"TestImages\.txt:1: image 'gameroom/bt_1\.jpg' is already listed at .*TrainImages\.txt:2"):
        read_mit67(tmp_path)


# ------------------------------------------------------------------------------------------------------- CUB


def test_cub_split_labels_and_clipped_boxes(tmp_path: Path, fake) -> None:
    f = fake.make_cub(tmp_path)
    ds = read_cub(tmp_path)
    assert ds.classes == f["classes"]
    train_ids = [f["images"][k] for k in sorted(f["images"]) if f["train"][k] == 1]
    assert [s.id for s in ds.splits["train"]] == train_ids
    assert ds.labels["train"].tolist() == [f["label"][k] - 1 for k in sorted(f["images"]) if f["train"][k] == 1]
    assert len(ds.splits["test"]) == 3
    by_id = {s.id: s for split in ds.splits.values() for s in split}
    # image 2: x=10 y=8 w=20 h=16 -> (10, 8, 30, 24); x1.5 about the centre (20, 16) -> (5, 4, 35, 28), inside 48x40
    assert by_id[f["images"][2]].box == pytest.approx((5.0, 4.0, 35.0, 28.0))
    # image 1: (0, 0, 40, 30) -> (-10, -7.5, 50, 37.5) clipped to the 48x40 image
    assert by_id[f["images"][1]].box == pytest.approx((0.0, 0.0, 48.0, 37.5))
    assert ds.meta["annotated_boxes"][f["images"][1]] == (0.0, 0.0, 40.0, 30.0)
    assert ds.meta["boxes_unclipped"] == 0 and ds.meta["box_scale"] == 1.5
    assert by_id[f["images"][1]].path.is_file()


def test_cub_box_options(tmp_path: Path, fake) -> None:
    f = fake.make_cub(tmp_path)
    whole = read_cub(tmp_path / "CUB_200_2011", use_boxes=False)  # root may be CUB_200_2011 itself
    assert all(s.box is None for s in whole.splits["train"])
    raw = read_cub(tmp_path, box_scale=1.0)
    assert {s.id: s.box for s in raw.splits["test"]}[f["images"][4]] == (2.0, 3.0, 46.0, 38.0)
    with pytest.raises(ConfigError):
        read_cub(tmp_path, box_scale=0)


def test_cub_without_images_keeps_unclipped_boxes(tmp_path: Path, fake) -> None:
    f = fake.make_cub(tmp_path, images=False)
    ds = read_cub(tmp_path)
    assert ds.meta["boxes_unclipped"] == 6
    assert {s.id: s.box for s in ds.splits["train"]}[f["images"][2]] == pytest.approx((5.0, 4.0, 35.0, 28.0))


@pytest.mark.parametrize(
    "file, text, match",
    [
        ("train_test_split.txt", "1 0\n2 1\n3 1\n4 0\n5 2\n6 0\n", r"train_test_split\.txt:5: is_training_image is 2"),
        ("image_class_labels.txt", "1 1\n2 1\n3 2\n4 2\n5 3\n6 7\n", r"image_class_labels\.txt:6: class id 7 is not in classes\.txt"),
        ("image_class_labels.txt", "1 1\n2 1\n3 2\n4 2\n5 3\n", r"image_class_labels\.txt: no entry for image id 6"),
        ("image_class_labels.txt", "1 1\n2 1\n3 2\n4 2\n5 3\n6 3\n9 1\n", r"image_class_labels\.txt:7: image id 9 is not in images\.txt"),
        ("image_class_labels.txt", "1 1\n2 1\n3 1\n4 2\n5 3\n6 3\n", r"images\.txt:3: image 3 sits in folder '002\.Laysan_Albatross'"),
        ("bounding_boxes.txt", "1 0 0 4 3\n2 1 1 2 2\n3 1 1 0 2\n4 1 1 2 2\n5 1 1 2 2\n6 1 1 2 2\n", r"bounding_boxes\.txt:3: box of image 3"),
        ("bounding_boxes.txt", "1 0 0 4 3\n2 1 1 2\n", r"bounding_boxes\.txt:2: expected 5 fields"),
        ("bounding_boxes.txt", "1 0 0 4 x\n", r"bounding_boxes\.txt:1: height 'x' is not a number"),
        ("images.txt", "1 a/b.jpg\n1 a/c.jpg\n", r"images\.txt:2: image id 1 repeats line 1"),
    ],
)
def test_cub_errors(tmp_path: Path, fake, file: str, text: str, match: str) -> None:
    fake.make_cub(tmp_path, images=False)
    (tmp_path / "CUB_200_2011" / file).write_text(text)
    with pytest.raises(DatasetError, match=match):
        read_cub(tmp_path)


def test_cub_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"images\.txt not found.*cnnbase datasets download cub200"):
        read_cub(tmp_path)


# --------------------------------------------------------------------------------------------------- Flowers


def test_flowers(tmp_path: Path, fake) -> None:
    f = fake.make_flowers(tmp_path)
    ds = read_flowers(tmp_path)
    assert ds.classes == ["1", "2", "3"]
    assert [s.id for s in ds.splits["train"]] == ["jpg/image_00001.jpg", "jpg/image_00002.jpg", "jpg/image_00003.jpg"]
    assert len(ds.splits["test"]) == 6 and len(ds.splits["trainval"]) == 6
    np.testing.assert_array_equal(ds.labels["test"], f["labels"][f["tstid"] - 1] - 1)
    np.testing.assert_array_equal(ds.labels["trainval"], np.concatenate([ds.labels["train"], ds.labels["val"]]))
    assert ds.splits["val"][0].path.is_file()


def test_flowers_errors(tmp_path: Path, fake) -> None:
    import scipy.io

    with pytest.raises(DatasetError, match=r"imagelabels\.mat: file not found"):
        read_flowers(tmp_path)
    fake.make_flowers(tmp_path, images=False)
    scipy.io.savemat(tmp_path / "setid.mat", {"trnid": [[1, 2]], "valid": [[2, 3]], "tstid": [[4]]})
    with pytest.raises(DatasetError, match=r"setid\.mat: image 2 is in both trnid and valid"):
        read_flowers(tmp_path)
    scipy.io.savemat(tmp_path / "setid.mat", {"trnid": [[1, 2]], "valid": [[3]], "tstid": [[40]]})
    with pytest.raises(DatasetError, match=r"setid\.mat: tstid holds image number 40, outside 1\.\.12"):
        read_flowers(tmp_path)
    scipy.io.savemat(tmp_path / "setid.mat", {"trnid": [[1, 2]], "tstid": [[4]]})
    with pytest.raises(DatasetError, match=r"setid\.mat: has no variable 'valid'"):
        read_flowers(tmp_path)
    (tmp_path / "setid.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match=r"setid\.mat: not a readable MAT v5 file"):
        read_flowers(tmp_path)
