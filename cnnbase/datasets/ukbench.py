"""UKBench (Nistér & Stewénius 2006): 10200 images ``ukbench%05d.jpg``, 2550 objects × 4 views.

There is no annotation file: the ground truth is implicit, group = image number // 4. Layout (``root``)::

    full/ukbench00000.jpg ... ukbench10199.jpg     (or the images directly in ``root``, or in ``jpg/``)

* ``database`` = all ``n_images`` images in number order; ``query`` = the same images (every image is a query).
* ``queries[i] = {"positives": the 4 images of its group, the query included, "junk": [], "self": [i]}``: the
  N-S score counts the query itself among the top 4 (PROTOCOLS 6.5), so it is a positive here (unlike
  Holidays, whose script ignores it).
* The list is built from the naming rule, so it is complete even when images are absent; ``verify`` then
  counts them as missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ._annotations import first_existing
from .base import ImageSet, Sample, register_adapter


@register_adapter("ukbench")
def read_ukbench(root: Path | str, *, image_dir: str | None = None, n_images: int = 10200, group_size: int = 4) -> ImageSet:
    """Read UKBench (see the module docstring)."""
    if n_images <= 0 or group_size <= 0 or n_images % group_size:
        raise ConfigError(f"ukbench n_images ({n_images}) must be a positive multiple of group_size ({group_size})")
    root = Path(root)
    if image_dir:
        img_dir = root / image_dir
    else:
        img_dir = first_existing((root / "full", root / "jpg", root), test=lambda p: (p / "ukbench00000.jpg").is_file()) or root / "full"
    database = [Sample(id=f"ukbench{i:05d}", path=img_dir / f"ukbench{i:05d}.jpg") for i in range(n_images)]
    queries = []
    for i in range(n_images):
        g = i // group_size
        queries.append(
            {
                "positives": np.arange(g * group_size, (g + 1) * group_size, dtype=np.int64),
                "junk": np.zeros(0, dtype=np.int64),
                "self": np.asarray([i], dtype=np.int64),
            }
        )
    meta = {"image_dir": str(img_dir), "group_size": group_size, "database_complete": True}
    return ImageSet(name="ukbench", task="retrieval", root=root, classes=[], splits={"query": list(database), "database": database}, queries=queries, meta=meta)
