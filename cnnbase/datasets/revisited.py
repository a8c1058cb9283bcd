"""Revisited Oxford / Paris (Radenović et al., CVPR 2018): ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl``.

Layout (``root``, as revisitop's ``download.py`` makes it)::

    gnd_roxford5k.pkl    {'imlist': [4993 names], 'qimlist': [70 names], 'gnd': [70 x {'bbx', 'easy', 'hard', 'junk'}]}
    jpg/<name>.jpg       (or nested anywhere under ``jpg/``, as paris_1.tgz unpacks: looked up by name;
                          without ``jpg/``, anywhere under ``root``)

The pickle is read with :mod:`cnnbase.datasets._safe_pickle` (no code can run). Names carry no ``.jpg``;
indices are 0-based into ``imlist``; ``bbx`` is ``[x1, y1, x2, y2]`` (mixed int/float), used as the PIL crop
box of the query as revisitop's ``example_process_images.py`` does (``img.crop(bbx)``).

* ``query`` split: ``qimlist`` with boxes (``query_box=False`` for whole images); ``database``: ``imlist``
  (queries are not in it: revisitop's protocol removes them).
* ``queries[i] = {"easy", "hard", "junk"}`` exactly as in the file. Protocols (PROTOCOLS 6.3): Easy: positives
  easy, ignore junk ∪ hard; Medium: easy ∪ hard, ignore junk; Hard: hard, ignore junk ∪ easy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ._annotations import index_images
from ._safe_pickle import load_pickle
from .base import ImageSet, Sample, register_adapter, safe_join


def find_gnd(root: Path, name: str | None) -> Path | None:
    """``root/gnd_<name>.pkl``, else the only ``gnd_*.pkl`` in ``root``."""
    if name and (root / f"gnd_{name}.pkl").is_file():
        return root / f"gnd_{name}.pkl"
    found = sorted(root.glob("gnd_*.pkl")) if root.is_dir() else []
    return found[0] if len(found) == 1 else None


def _check_names(value: Any, path: Path, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise DatasetError(f"{path}: {key!r} must be a list of image names; this is not a revisitop gnd file")
    if len(set(value)) != len(value):
        raise DatasetError(f"{path}: a name repeats in {key!r}; download the official file again")
    return list(value)


def _indices(value: Any, path: Path, where: str, n: int) -> np.ndarray:
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    try:
        arr = np.asarray(value if value is not None else [], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {where} is not a list of indices; download the official file again") from None
    if arr.size and (not np.all(arr == np.round(arr)) or arr.min() < 0 or arr.max() >= n):
        raise DatasetError(f"{path}: {where} holds an index outside 0..{n - 1} (imlist has {n} names); download the official file again")
    return arr.astype(np.int64)


@register_adapter("revisited")
def read_revisited(
    root: Path | str,
    *,
    name: str | None = None,
    gnd_file: str | None = None,
    image_dir: str = "jpg",
    query_box: bool = True,
) -> ImageSet:
    """Read a revisitop ground-truth pickle (see the module docstring)."""
    root = Path(root)
    path = (root / gnd_file) if gnd_file else find_gnd(root, name)
    if path is None or not path.is_file():
        raise DatasetError(
            f"{path or root}: gnd_{name or '<name>'}.pkl not found; run `cnnbase datasets download {name or 'roxford5k'}` "
            "or point --root at the folder holding it"
        )
    data = load_pickle(path)
    if not isinstance(data, dict) or not {"imlist", "qimlist", "gnd"} <= set(data):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{path}: expected a dict with 'imlist', 'qimlist' and 'gnd' (found {keys}); this is not a revisitop gnd file")
    imlist = _check_names(data["imlist"], path, "imlist")
    qimlist = _check_names(data["qimlist"], path, "qimlist")
    gnd = data["gnd"]
    if not isinstance(gnd, (list, tuple)) or len(gnd) != len(qimlist):
        raise DatasetError(f"{path}: 'gnd' must hold one entry per query ({len(qimlist)}); download the official file again")
    img_root = root / image_dir
    found = index_images(img_root if img_root.is_dir() else root)  # flat jpg/ or nested (paris/<landmark>/)

    def sample(x: str, box: tuple[float, ...] | None = None) -> Sample:
        p = found.get(x) or safe_join(img_root, f"{x}.jpg", where=str(path))
        return Sample(id=x, path=p, box=box)  # type: ignore[arg-type]

    queries, qsamples = [], []
    n = len(imlist)
    for i, (q, g) in enumerate(zip(qimlist, gnd, strict=True)):
        if not isinstance(g, dict):
            raise DatasetError(f"{path}: gnd[{i}] is not a dict; download the official file again")
        missing = [k for k in ("easy", "hard", "junk") if k not in g]
        if missing:
            raise DatasetError(f"{path}: gnd[{i}] ({q}) lacks {', '.join(missing)}; download the official file again")
        box = None
        if query_box and g.get("bbx") is not None:
            try:
                box = tuple(float(v) for v in np.asarray(g["bbx"], dtype=np.float64).ravel())
            except (TypeError, ValueError):
                box = ()
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
                raise DatasetError(f"{path}: gnd[{i}]['bbx'] ({q}) is not a box [x1, y1, x2, y2]; download the official file again")
        queries.append({k: _indices(g[k], path, f"gnd[{i}][{k!r}] ({q})", n) for k in ("easy", "hard", "junk")})
        qsamples.append(sample(q, box))
    meta = {
        "gnd_file": str(path),
        "database_complete": True,
        "protocols": {
            "easy": {"positives": ["easy"], "junk": ["junk", "hard"]},
            "medium": {"positives": ["easy", "hard"], "junk": ["junk"]},
            "hard": {"positives": ["hard"], "junk": ["junk", "easy"]},
        },
    }
    return ImageSet(
        name=name or path.stem.removeprefix("gnd_"),
        task="retrieval",
        root=root,
        classes=[],
        splits={"query": qsamples, "database": [sample(x) for x in imlist]},
        queries=queries,
        meta=meta,
    )
