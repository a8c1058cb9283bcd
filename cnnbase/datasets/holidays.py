"""INRIA Holidays (Jégou et al. 2008): 1491 images, 500 queries.

Layout (``root``)::

    holidays_images.dat    the image list of INRIA's eval_holidays package ("100000.jpg" per line, no final newline)
    gnd_holidays.mat       optional (Tolias/Radenović style: imlist, 1-based qidx, gnd(i).ok/junk); cross-checked
    jpg/                   the images (jpg1.tar.gz + jpg2.tar.gz)
    jpg_rotated/           the upright-corrected images (``rotated: true``; the layout of Relja/netvlad's dbHolidays)

The image list comes from ``holidays_images.dat``, else from ``gnd_holidays.mat``'s ``imlist``, else from the
image folder's ``NNNNNN.jpg`` files. An image is a query iff its number is a multiple of 100; its group is the
number // 100 (holidays_map.py).

* ``database`` = all images in list order; ``query`` = the queries (same ids and paths: the query is in the
  database). Sample ids are the image paths relative to ``root`` (``jpg/100000.jpg``,
  ``jpg_rotated/100000.jpg``), so the two variants can never share stored features.
* ``queries[i] = {"positives": the other images of its group, "junk": [itself], "self": [itself]}``: the official
  script ignores the query when it is returned (``rank_shift``), so it is junk for any junk-aware AP, and
  ``self`` names it explicitly.
* ``rotated`` is recorded in ``meta['variant']`` (``"rotated"`` / ``"original"``) and must be reported with every
  result: the paper numbers differ between the two (PROTOCOLS 6.4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ._annotations import bad_line, lines, numbered_name
from .base import ImageSet, Sample, register_adapter, safe_join


def _from_mat(path: Path) -> tuple[list[str], np.ndarray | None]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable MAT v5 file ({exc}); download it again or delete it") from None
    if "imlist" not in mat:
        raise DatasetError(f"{path}: has no 'imlist'; this is not a Holidays gnd file")
    names = []
    for item in np.asarray(mat["imlist"]).ravel():
        s = str(np.asarray(item).ravel()[0]) if np.asarray(item).size else ""
        names.append(s if s.lower().endswith(".jpg") else f"{s}.jpg")
    qidx = np.asarray(mat["qidx"]).ravel().astype(np.int64) - 1 if "qidx" in mat else None
    return names, qidx


@register_adapter("holidays")
def read_holidays(
    root: Path | str,
    *,
    rotated: bool = False,
    image_dir: str | None = None,
    image_list: str = "holidays_images.dat",
    gnd_file: str = "gnd_holidays.mat",
) -> ImageSet:
    """Read INRIA Holidays (see the module docstring).

    Args:
        root: the dataset folder.
        rotated: use the upright-corrected images (``jpg_rotated/``) instead of the originals (``jpg/``).
        image_dir: override the image folder (relative to ``root``).
        image_list: the image list file (relative to ``root``).
        gnd_file: the optional gnd .mat (relative to ``root``), cross-checked when present.
    """
    root = Path(root)
    img_dir = root / (image_dir or ("jpg_rotated" if rotated else "jpg"))
    list_path, mat_path = root / image_list, root / gnd_file
    entries: list[tuple[str, str]] = []  # (name, where)
    mat_qidx = None
    if list_path.is_file():
        for n, text in lines(list_path, "one image name per line", "holidays"):
            entries.append((text, f"{list_path}:{n}"))
        source = str(list_path)
    elif mat_path.is_file():
        names, mat_qidx = _from_mat(mat_path)
        entries = [(x, f"{mat_path}:imlist[{i}]") for i, x in enumerate(names)]
        source = str(mat_path)
    elif img_dir.is_dir():
        entries = [(p.name, str(p)) for p in sorted(img_dir.iterdir()) if numbered_name(p.name) is not None]
        source = str(img_dir)
    else:
        raise DatasetError(
            f"{root}: neither {image_list}, {gnd_file} nor the image folder {img_dir.name}/ was found; "
            "see `cnnbase datasets download holidays` for where to get them"
        )
    if not entries:
        raise DatasetError(f"{source}: lists no images; download it again")
    numbers: list[int] = []
    seen: dict[int, str] = {}
    for name, where in entries:
        num = numbered_name(name if "." in name else f"{name}.jpg")
        if num is None:
            path, _, line = where.rpartition(":")
            raise bad_line(path, int(line) if line.isdigit() else None, f"image name {name!r} is not a number like 100000.jpg")
        if num in seen:
            raise DatasetError(f"{where}: image {name} is already listed at {seen[num]}; fix the list")
        seen[num] = where
        numbers.append(num)
    names = [f"{num:06d}" for num in numbers]
    prefix = (image_dir or ("jpg_rotated" if rotated else "jpg")).strip("/")
    database = [
        Sample(id=f"{prefix}/{x}.jpg", path=safe_join(img_dir, f"{x}.jpg", where=w)) for x, (_, w) in zip(names, entries, strict=True)
    ]
    nums = np.asarray(numbers, dtype=np.int64)
    groups = nums // 100
    qidx = np.flatnonzero(nums % 100 == 0)
    if mat_qidx is None and mat_path.is_file() and source != str(mat_path):
        mat_names, mat_qidx = _from_mat(mat_path)
        if [n[:-4] for n in mat_names] != names:
            raise DatasetError(f"{mat_path}: its imlist differs from {source}; the two files do not belong together (delete one)")
    if mat_qidx is not None and not np.array_equal(np.sort(mat_qidx), qidx):
        raise DatasetError(f"{mat_path}: its qidx does not match the rule 'query iff number % 100 == 0'; download it again")
    queries = []
    for q in qidx.tolist():
        same = np.flatnonzero(groups == groups[q])
        queries.append(
            {
                "positives": same[same != q].astype(np.int64),
                "junk": np.asarray([q], dtype=np.int64),
                "self": np.asarray([q], dtype=np.int64),
            }
        )
    meta = {
        "variant": "rotated" if rotated else "original",
        "image_dir": str(img_dir),
        "list_source": source,
        "database_complete": True,
        "groups": groups,
    }
    return ImageSet(
        name="holidays_rotated" if rotated else "holidays",
        task="retrieval",
        root=root,
        classes=[],
        splits={"query": [database[i] for i in qidx.tolist()], "database": database},
        queries=queries,
        meta=meta,
    )
