"""Oxford/Paris, revisited, Holidays and UKBench readers: splits, boxes and query ground truth."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from cnnbase.datasets.holidays import read_holidays
from cnnbase.datasets.oxford_paris import read_oxford_paris
from cnnbase.datasets.revisited import read_revisited
from cnnbase.datasets.ukbench import read_ukbench
from cnnbase.errors import ConfigError, DatasetError


def _gt(ds, i: int) -> dict[str, list[str]]:
    db = [s.id for s in ds.splits["database"]]
    return {k: [db[j] for j in v] for k, v in ds.queries[i].items()}


# ---------------------------------------------------------------------------------------------- Oxford/Paris


def test_oxford(tmp_path: Path, fake) -> None:
    f = fake.make_oxford(tmp_path)
    ds = read_oxford_paris(tmp_path, name="oxford5k")
    assert ds.task == "retrieval" and [s.id for s in ds.splits["database"]] == f["database"]
    q = ds.splits["query"]
    assert [s.id for s in q] == ["all_souls_1", "ashmolean_1"]
    assert q[0].path == tmp_path / "jpg" / "all_souls_000013.jpg"  # oxc1_ prefix stripped
    assert q[0].box == (136.5, 34.1, 648.5, 955.7) and q[1].box == (78.0, 5.0, 714.0, 1000.0)
    assert _gt(ds, 0) == {"positives": ["all_souls_000013", "all_souls_000026", "all_souls_000091"], "junk": ["oxford_003410"]}
    assert _gt(ds, 1) == {"positives": ["ashmolean_000025"], "junk": []}
    assert all(v.dtype == np.int64 for v in ds.queries[0].values())
    assert ds.meta["database_complete"] is True
    assert read_oxford_paris(tmp_path, query_box=False).splits["query"][0].box is None


def test_paris_nested_images_empty_good_and_corrupt(tmp_path: Path, fake) -> None:
    f = fake.make_paris(tmp_path)
    ds = read_oxford_paris(tmp_path, name="paris6k")
    assert [s.id for s in ds.splits["database"]] == f["database"]  # paris_louvre_000136 left out
    assert ds.meta["excluded"] == ["paris_louvre_000136"]
    assert ds.splits["database"][0].path.parent.name == "defense"
    assert ds.splits["query"][0].box == (130.0, 17.0, 843.0, 732.0)
    assert _gt(ds, 0) == {"positives": ["paris_defense_000050", "paris_defense_000605"], "junk": ["paris_louvre_000001"]}
    keep = read_oxford_paris(tmp_path, name="paris6k", exclude_known_corrupt=False)
    assert len(keep.splits["database"]) == 4


def test_oxford_without_images_and_with_list(tmp_path: Path, fake) -> None:
    fake.make_oxford(tmp_path, images=False)
    ds = read_oxford_paris(tmp_path)
    assert ds.meta["database_complete"] is False
    assert len(ds.splits["database"]) == 6  # every image the gt files name, queries included
    (tmp_path / "list.txt").write_text("\n".join(["all_souls_000013.jpg", "all_souls_000026", "all_souls_000091", "oxford_003410", "ashmolean_000007", "ashmolean_000025", "extra_000001"]))
    ds = read_oxford_paris(tmp_path, image_list="list.txt")
    assert ds.meta["database_complete"] is True and len(ds.splits["database"]) == 7
    assert ds.splits["database"][0].id == "all_souls_000013"


def test_oxford_errors(tmp_path: Path, fake) -> None:
    with pytest.raises(DatasetError, match=r"no \*_query\.txt ground-truth files found.*download oxford5k"):
        read_oxford_paris(tmp_path)
    f = fake.make_oxford(tmp_path)
    (f["gt"] / "ashmolean_1_junk.txt").unlink()
    with pytest.raises(DatasetError, match=r"ashmolean_1_junk\.txt: file not found"):
        read_oxford_paris(tmp_path)
    (f["gt"] / "ashmolean_1_junk.txt").write_text("")
    (f["gt"] / "ashmolean_1_query.txt").write_text("oxc1_ashmolean_000007 78 5 714\n")
    with pytest.raises(DatasetError, match=r"ashmolean_1_query\.txt:1: expected 5 fields"):
        read_oxford_paris(tmp_path)
    (f["gt"] / "ashmolean_1_query.txt").write_text("oxc1_ashmolean_000007 78 5 70 1000\n")
    with pytest.raises(DatasetError, match=r"ashmolean_1_query\.txt:1: query box .* is empty"):
        read_oxford_paris(tmp_path)
    (f["gt"] / "ashmolean_1_query.txt").write_text("oxc1_ashmolean_000007 78 5 714 1000\n")
    (f["gt"] / "ashmolean_1_ok.txt").write_text("ashmolean_999999\n")
    with pytest.raises(DatasetError, match=r"ashmolean_1_ok\.txt: image ashmolean_999999 .* is not in the database"):
        read_oxford_paris(tmp_path)
    (f["gt"] / "ashmolean_1_ok.txt").write_text("two names\n")
    with pytest.raises(DatasetError, match=r"ashmolean_1_ok\.txt:1: expected one image name"):
        read_oxford_paris(tmp_path)


# ------------------------------------------------------------------------------------------------- revisited


def test_revisited(tmp_path: Path, fake) -> None:
    f = fake.make_revisited(tmp_path)
    ds = read_revisited(tmp_path, name="roxford5k")
    assert [s.id for s in ds.splits["database"]] == f["imlist"]
    q = ds.splits["query"]
    assert [s.id for s in q] == f["qimlist"] and q[1].box == (78.0, 5.0, 714.0, 1000.0)
    assert q[0].path == tmp_path / "jpg" / "all_souls_000013.jpg" and q[0].path.is_file()
    assert {k: v.tolist() for k, v in ds.queries[0].items()} == {"easy": [2], "hard": [0, 4], "junk": [1]}
    assert ds.queries[1]["easy"].dtype == np.int64 and ds.queries[1]["easy"].size == 0
    assert ds.meta["protocols"]["medium"] == {"positives": ["easy", "hard"], "junk": ["junk"]}
    assert read_revisited(tmp_path, query_box=False).splits["query"][0].box is None  # the only gnd_*.pkl


def test_revisited_numpy_arrays_are_admitted(tmp_path: Path, fake) -> None:
    gnd = {
        "imlist": ["a", "b", "c"],
        "qimlist": ["q"],
        "gnd": [{"bbx": np.array([1.0, 2.0, 30.0, 40.0]), "easy": np.array([0, 2]), "hard": np.array([], dtype=np.int64), "junk": {1}}],
    }
    fake.make_revisited(tmp_path, "rparis6k", images=False, gnd=gnd)
    ds = read_revisited(tmp_path, name="rparis6k")
    assert ds.queries[0]["easy"].tolist() == [0, 2] and ds.queries[0]["junk"].tolist() == [1]
    assert ds.splits["query"][0].box == (1.0, 2.0, 30.0, 40.0)


def test_revisited_images_found_by_name_when_no_jpg_folder(tmp_path: Path, fake) -> None:
    fake.make_revisited(tmp_path, images=False)
    fake.jpeg(tmp_path / "paris" / "x" / "oxford_002124.jpg")
    ds = read_revisited(tmp_path)
    assert ds.splits["database"][1].path == tmp_path / "paris" / "x" / "oxford_002124.jpg"
    fake.jpeg(tmp_path / "jpg" / "paris" / "defense" / "oxford_000001.jpg")  # paris_1.tgz unpacked into jpg/
    ds = read_revisited(tmp_path)
    assert ds.splits["database"][3].path == tmp_path / "jpg" / "paris" / "defense" / "oxford_000001.jpg"
    assert ds.splits["database"][0].path == tmp_path / "jpg" / "ashmolean_000283.jpg"  # absent: the expected place


@pytest.mark.parametrize(
    "gnd, match",
    [
        ({"imlist": ["a"], "qimlist": ["q"]}, r"expected a dict with 'imlist', 'qimlist' and 'gnd'"),
        ([1, 2, 3], r"expected a dict"),
        ({"imlist": ["a", 3], "qimlist": ["q"], "gnd": [{}]}, r"'imlist' must be a list of image names"),
        ({"imlist": ["a", "a"], "qimlist": ["q"], "gnd": [{}]}, r"a name repeats in 'imlist'"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": []}, r"'gnd' must hold one entry per query \(1\)"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [], "hard": []}]}, r"gnd\[0\] \(q\) lacks junk"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [1], "hard": [], "junk": []}]}, r"gnd\[0\]\['easy'\] \(q\) holds an index outside 0\.\.0"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [1, 2, 0, 4], "easy": [], "hard": [], "junk": []}]}, r"gnd\[0\]\['bbx'\] \(q\) is not a box"),
    ],
)
def test_revisited_errors(tmp_path: Path, gnd: object, match: str) -> None:
    (tmp_path / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd, protocol=3))
    with pytest.raises(DatasetError, match=match):
        read_revisited(tmp_path, name="roxford5k")


def test_revisited_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"gnd_rparis6k\.pkl not found.*download rparis6k"):
        read_revisited(tmp_path, name="rparis6k")


# -------------------------------------------------------------------------------------------------- Holidays


def test_holidays(tmp_path: Path, fake) -> None:
    fake.make_holidays(tmp_path)
    ds = read_holidays(tmp_path)
    assert [s.id for s in ds.splits["database"]] == ["jpg/100000.jpg", "jpg/100001.jpg", "jpg/100002.jpg", "jpg/100100.jpg", "jpg/100101.jpg"]
    assert [s.id for s in ds.splits["query"]] == ["jpg/100000.jpg", "jpg/100100.jpg"]
    assert ds.splits["query"][0] == ds.splits["database"][0]
    assert {k: v.tolist() for k, v in ds.queries[0].items()} == {"positives": [1, 2], "junk": [0], "self": [0]}
    assert {k: v.tolist() for k, v in ds.queries[1].items()} == {"positives": [4], "junk": [3], "self": [3]}
    assert ds.meta["variant"] == "original" and ds.splits["database"][0].path == tmp_path / "jpg" / "100000.jpg"
    rot = read_holidays(tmp_path, rotated=True)
    assert rot.meta["variant"] == "rotated" and rot.splits["database"][0].path == tmp_path / "jpg_rotated" / "100000.jpg"
    assert rot.name == "holidays_rotated" and rot.splits["query"][1].id == "jpg_rotated/100100.jpg"
    assert rot.split_hash("database") != ds.split_hash("database")  # never the same stored features


def test_holidays_list_sources(tmp_path: Path, fake) -> None:
    import scipy.io

    fake.make_holidays(tmp_path)
    (tmp_path / "holidays_images.dat").unlink()
    assert len(read_holidays(tmp_path).splits["database"]) == 5  # from the image folder
    imlist = np.empty((5, 1), dtype=object)
    for i, x in enumerate(["100000", "100001", "100002", "100100", "100101"]):
        imlist[i, 0] = np.array([x])
    scipy.io.savemat(tmp_path / "gnd_holidays.mat", {"imlist": imlist, "qidx": np.array([[1], [4]])})
    ds = read_holidays(tmp_path)
    assert ds.meta["list_source"].endswith("gnd_holidays.mat") and len(ds.queries) == 2
    scipy.io.savemat(tmp_path / "gnd_holidays.mat", {"imlist": imlist, "qidx": np.array([[1], [2]])})
    with pytest.raises(DatasetError, match=r"gnd_holidays\.mat: its qidx does not match the rule"):
        read_holidays(tmp_path)


def test_holidays_errors(tmp_path: Path, fake) -> None:
    with pytest.raises(DatasetError, match=r"neither holidays_images\.dat, gnd_holidays\.mat nor the image folder"):
        read_holidays(tmp_path)
    fake.make_holidays(tmp_path, images=False)
    (tmp_path / "holidays_images.dat").write_text("100000.jpg\nholiday.jpg\n")
    with pytest.raises(DatasetError, match=r"holidays_images\.dat:2: image name 'holiday\.jpg' is not a number"):
        read_holidays(tmp_path)
    (tmp_path / "holidays_images.dat").write_text("100000.jpg\r\n100000.jpg\r\n")
    with pytest.raises(DatasetError, match=r"holidays_images\.dat:2: image 100000\.jpg is already listed"):
        read_holidays(tmp_path)


# --------------------------------------------------------------------------------------------------- UKBench


def test_ukbench(tmp_path: Path, fake) -> None:
    fake.make_ukbench(tmp_path, n=8)
    ds = read_ukbench(tmp_path, n_images=8)
    assert [s.id for s in ds.splits["database"]][:2] == ["ukbench00000", "ukbench00001"]
    assert ds.splits["database"][5].path == tmp_path / "full" / "ukbench00005.jpg"
    assert len(ds.splits["query"]) == 8 and len(ds.queries) == 8
    assert {k: v.tolist() for k, v in ds.queries[5].items()} == {"positives": [4, 5, 6, 7], "junk": [], "self": [5]}
    assert len(read_ukbench(tmp_path / "absent").splits["database"]) == 10200  # implicit ground truth
    with pytest.raises(ConfigError):
        read_ukbench(tmp_path, n_images=10)
