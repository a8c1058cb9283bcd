"""Oxford Buildings (5k) and Paris (6k), original protocol, from the VGG ground-truth files.

Layout (``root``)::

    gt_files_170407/ or paris_120310/   (any folder holding the *_query.txt files; found automatically)
        <query>_query.txt    one line: "<image> x1 y1 x2 y2"  (Oxford prefixes the image with "oxc1_")
        <query>_good.txt     one image name per line, no ".jpg"    (every Paris _good file is empty)
        <query>_ok.txt
        <query>_junk.txt
    <images>                 *.jpg, flat (Oxford: oxbuild_images.tgz) or nested (Paris: paris/<landmark>/*.jpg)

* ``query`` split: the 55 queries in sorted file order; sample id = the query name (``all_souls_1``), path =
  the query image, box = the query box as a PIL crop box (``query_box=False`` for whole images). Coordinates
  are floats (Oxford mixes ``136.5`` and ``78``; Paris writes ``130.000000``).
* ``database`` split: every image (sorted by name), ids = image names without ``.jpg``. Paris's 20 corrupt
  files (VGG's ``corrupt.txt``, ``PARIS_CORRUPT``) are left out, giving 6392 (``exclude_known_corrupt``).
* ``queries[i] = {"positives": good ∪ ok, "junk": junk}`` as database indices (PROTOCOLS 6.2).
* The gt files do not list the database. It comes from ``image_list`` (a file with one name per line) if
  given, else from the image folder. When neither is available (annotations only, as in
  ``shared/annotations``) the database is the images the gt files name and ``meta['database_complete']`` is
  False: enough to check the ground truth, not to evaluate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ._annotations import bad_line, fields, first_existing, index_images, lines, to_float
from .base import ImageSet, Sample, register_adapter, safe_join

# https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/corrupt.txt (files that are an HTML error page, not a JPEG)
PARIS_CORRUPT = frozenset(
    {
        "paris_louvre_000136", "paris_louvre_000146", "paris_moulinrouge_000422", "paris_museedorsay_001059",
        "paris_notredame_000188", "paris_pantheon_000284", "paris_pantheon_000960", "paris_pantheon_000974",
        "paris_pompidou_000195", "paris_pompidou_000196", "paris_pompidou_000201", "paris_pompidou_000467",
        "paris_pompidou_000640", "paris_sacrecoeur_000299", "paris_sacrecoeur_000330", "paris_sacrecoeur_000353",
        "paris_triomphe_000662", "paris_triomphe_000833", "paris_triomphe_000863", "paris_triomphe_000867",
    }
)  # fmt: skip
GT_DIRS = ("gt_files_170407", "paris_120310", "gt_files", "gt")
IMAGE_DIRS = ("jpg", "oxbuild_images", "images", "paris", "oxford")


def find_gt_dir(root: Path) -> Path | None:
    """The folder holding ``*_query.txt``: a known name under ``root``, ``root`` itself, or any child folder."""
    has_queries = lambda p: p.is_dir() and any(p.glob("*_query.txt"))  # noqa: E731
    found = first_existing([root / d for d in GT_DIRS] + [root], test=has_queries)
    if found is None and root.is_dir():
        found = first_existing(sorted(p for p in root.iterdir() if p.is_dir()), test=has_queries)
    return found


def _names(path: Path, name: str) -> list[str]:
    out = []
    for n, text in lines(path, "one image name per line", name):
        if len(text.split()) != 1:
            raise bad_line(path, n, f"expected one image name, got {text!r}")
        out.append(text[:-4] if text.lower().endswith(".jpg") else text)
    return out


@register_adapter("oxford_paris")
def read_oxford_paris(
    root: Path | str,
    *,
    name: str = "oxford5k",
    gt_dir: str | None = None,
    image_dir: str | None = None,
    image_list: str | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    exclude_known_corrupt: bool = True,
    query_box: bool = True,
    strip_prefix: str = "oxc1_",
) -> ImageSet:
    """Read an Oxford/Paris ground-truth folder (see the module docstring).

    Args:
        root: the dataset folder.
        name: dataset name used in messages (``oxford5k`` / ``paris6k``).
        gt_dir: the ground-truth folder relative to ``root`` (default: found automatically).
        image_dir: the image folder relative to ``root`` (default: the first of ``jpg``, ``oxbuild_images``,
            ``images``, ``paris``, ``oxford`` that exists, else ``root``); searched recursively.
        image_list: a file listing the database images (one name per line), relative to ``root``.
        exclude: image names to leave out of the database.
        exclude_known_corrupt: also leave out Paris's 20 known corrupt files.
        query_box: crop queries to their box.
        strip_prefix: prefix removed from query image names (Oxford's ``oxc1_``).
    """
    root = Path(root)
    gt = (root / gt_dir) if gt_dir else find_gt_dir(root)
    if gt is None or not gt.is_dir() or not any(gt.glob("*_query.txt")):
        raise DatasetError(
            f"{gt or root}: no *_query.txt ground-truth files found; run `cnnbase datasets download {name}` "
            "or point --root at the folder holding the gt files"
        )
    query_files = sorted(gt.glob("*_query.txt"))
    qnames, qimages, qboxes, gt_lists = [], [], [], []
    for qf in query_files:
        rows = list(fields(qf, "'<image> x1 y1 x2 y2'", 5, name))
        if len(rows) != 1:
            raise bad_line(qf, rows[1][0] if rows else None, f"expected exactly one query line, found {len(rows)}")
        n, parts = rows[0]
        image = parts[0][len(strip_prefix):] if strip_prefix and parts[0].startswith(strip_prefix) else parts[0]
        box = tuple(to_float(v, qf, n, k) for v, k in zip(parts[1:], ("x1", "y1", "x2", "y2"), strict=True))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise bad_line(qf, n, f"query box {box} is empty (x2 <= x1 or y2 <= y1)")
        q = qf.name[: -len("_query.txt")]
        lists = {}
        for kind in ("good", "ok", "junk"):
            f = gt / f"{q}_{kind}.txt"
            lists[kind] = _names(f, name)  # a missing file raises; an empty one (all Paris _good files) is fine
        qnames.append(q)
        qimages.append(image)
        qboxes.append(box)
        gt_lists.append(lists)

    dropped = set(exclude) | (PARIS_CORRUPT if exclude_known_corrupt else set())
    img_root = (root / image_dir) if image_dir else first_existing([root / d for d in IMAGE_DIRS], test=Path.is_dir) or root
    found = index_images(img_root)
    complete = True
    if image_list:
        lf = root / image_list
        db_names = [x for x in _names(lf, name) if x not in dropped]
        source = str(lf)
    elif found:
        db_names = sorted(x for x in found if x not in dropped)
        source = str(img_root)
    else:
        db_names = sorted({x for lists in gt_lists for v in lists.values() for x in v} | set(qimages))
        source = "ground-truth files only (image folder not found)"
        complete = False
    if len(set(db_names)) != len(db_names):
        raise DatasetError(f"{source}: an image name repeats in the database list; fix the list")
    index = {x: i for i, x in enumerate(db_names)}

    def path_of(x: str, where: str) -> Path:
        return found[x] if x in found else safe_join(img_root, f"{x}.jpg", where=where)

    database = [Sample(id=x, path=path_of(x, source)) for x in db_names]
    queries, qsamples = [], []
    for q, image, box, lists in zip(qnames, qimages, qboxes, gt_lists, strict=True):
        for kind, names in lists.items():
            absent = [x for x in names if x not in index]
            if absent:
                raise DatasetError(
                    f"{gt / f'{q}_{kind}.txt'}: image {absent[0]} (and {len(absent) - 1} more) is not in the database "
                    f"({source}); the image folder is incomplete or the wrong dataset, or add it to image_list"
                )
        pos = sorted({index[x] for x in lists["good"] + lists["ok"]})
        junk = sorted({index[x] for x in lists["junk"]})
        queries.append({"positives": np.asarray(pos, dtype=np.int64), "junk": np.asarray(junk, dtype=np.int64)})
        qsamples.append(Sample(id=q, path=path_of(image, str(gt / f"{q}_query.txt")), box=box if query_box else None))
    meta = {
        "gt_dir": str(gt),
        "query_images": qimages,
        "query_boxes": qboxes,
        "database_source": source,
        "database_complete": complete,
        "excluded": sorted(dropped & set(found)) if found else [],
        "protocol": "positives = good + ok, junk ignored (VGG compute_ap)",
    }
    return ImageSet(name=name, task="retrieval", root=root, classes=[], splits={"query": qsamples, "database": database}, queries=queries, meta=meta)
