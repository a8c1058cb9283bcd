"""The readers against the real official annotation files, when a folder of them is available.

Runs only with ``CNNBASE_SHARED_ANNOTATIONS`` pointing at a folder laid out as ``shared/annotations``
(``voc2007/VOCdevkit/...``, ``mit67/``, ``cub200_2011/``, ``flowers102/``, ``apascal_ayahoo/``, ``oxford5k/``,
``paris6k/``, ``revisitop/{roxford5k,rparis6k}/``, ``holidays/``); images are not needed. Every count is the one
pinned in datasets.yaml (and in that folder's SOURCES.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cnnbase.config import load_dataset_configs, resource_path
from cnnbase.datasets.verify import verify

SHARED = os.environ.get("CNNBASE_SHARED_ANNOTATIONS")
pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not SHARED or not Path(SHARED).is_dir(), reason="set CNNBASE_SHARED_ANNOTATIONS to a shared/annotations folder"),
]

ROOTS = {
    "voc2007": "voc2007",
    "mit67": "mit67",
    "cub200": "cub200_2011",
    "flowers102": "flowers102",
    "apascal": "apascal_ayahoo",
    "ayahoo": "apascal_ayahoo",
    "oxford5k": "oxford5k",
    "paris6k": "paris6k",
    "roxford5k": "revisitop/roxford5k",
    "rparis6k": "revisitop/rparis6k",
    "holidays": "holidays",
    "holidays_rotated": "holidays",
}


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_counts_match_published(name: str) -> None:
    root = Path(SHARED) / ROOTS[name]  # type: ignore[arg-type]
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    datasets = resource_path("datasets.yaml")
    rep = verify(name, root=root, datasets=datasets, check_images=False)
    assert rep.readable, rep.error
    assert rep.ok, [(c.what, c.found, c.published, c.status) for c in rep.splits + rep.counts]
    pub = load_dataset_configs(datasets)[name].published["splits"]
    for c in rep.splits:
        if c.status == "unknown":  # Oxford/Paris database: needs the image folder
            assert name in ("oxford5k", "paris6k") and c.what == "database"
        else:
            assert c.found == pub[c.what]


def test_voc2007_label_statistics() -> None:
    from cnnbase.datasets.voc import VOC_CLASSES, read_voc

    ds = read_voc(Path(SHARED) / "voc2007")  # type: ignore[arg-type]
    pos = (ds.labels["trainval"] == 1).sum(0)
    assert pos[VOC_CLASSES.index("aeroplane")] == 238 and pos[VOC_CLASSES.index("person")] == 2008
    assert int((ds.labels["trainval"] == 0).sum()) == 607 and int((ds.labels["test"] == 0).sum()) == 619


def test_revisited_totals() -> None:
    from cnnbase.datasets.revisited import read_revisited

    ds = read_revisited(Path(SHARED) / "revisitop" / "roxford5k", name="roxford5k")  # type: ignore[operator]
    totals = [int(sum(len(q[k]) for q in ds.queries)) for k in ("easy", "hard", "junk")]
    assert totals == [3029, 2497, 1356]
    assert sum(1 for q in ds.queries if q["easy"].size == 0) == 2


def test_holidays_groups() -> None:
    from cnnbase.datasets.holidays import read_holidays

    ds = read_holidays(Path(SHARED) / "holidays")  # type: ignore[operator]
    assert int(sum(len(q["positives"]) for q in ds.queries)) == 991
    assert np.all([q["junk"].tolist() == q["self"].tolist() for q in ds.queries])
