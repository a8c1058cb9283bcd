"""Oxford 102 Flowers (Nilsback & Zisserman 2008), official split.

Layout (``root``)::

    imagelabels.mat   'labels': 1 x 8189, values 1..102
    setid.mat         'trnid', 'valid', 'tstid': 1 x 1020, 1 x 1020, 1 x 6149, 1-based image numbers
    jpg/image_00001.jpg ... image_08189.jpg      (102flowers.tgz)

Both are MAT v5 files (scipy.io.loadmat; arrays are row vectors and are flattened). Splits: ``train`` (trnid,
10 per class), ``val`` (valid), ``test`` (tstid, the large one: 6149) and ``trainval`` = train then val.
Classes are the label numbers ``"1"`` .. ``"102"`` (the dataset ships no names). Sample ids are
``jpg/image_%05d.jpg``.

Which split Razavian trained on is not stated (PROTOCOLS 1.1); cnnbase's ``flowers102`` entry trains on
``trainval`` (2040) and tests on ``test`` (6149), the usual protocol since Nilsback & Zisserman (validation is
for choosing C, then the model is refit on train+val). Some papers swap train and test; never do that here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ._annotations import missing_file
from .base import ImageSet, Sample, register_adapter, safe_join

SET_KEYS = (("train", "trnid"), ("val", "valid"), ("test", "tstid"))


def _loadmat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    import scipy.io

    if not path.is_file():
        raise missing_file(path, f"a MAT file with {', '.join(keys)}", "flowers102")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError for bad files
        raise DatasetError(f"{path}: not a readable MAT v5 file ({exc}); download it again") from None
    out = {}
    for k in keys:
        if k not in mat:
            have = ", ".join(sorted(x for x in mat if not x.startswith("__")))
            raise DatasetError(f"{path}: has no variable {k!r} (found: {have or 'none'}); download the official file again")
        arr = np.asarray(mat[k]).ravel()
        if arr.size == 0 or not np.issubdtype(arr.dtype, np.number) or not np.all(arr == np.round(arr)):
            raise DatasetError(f"{path}: variable {k!r} is not a non-empty vector of integers; download it again")
        out[k] = arr.astype(np.int64)
    return out


@register_adapter("flowers102")
def read_flowers(
    root: Path | str,
    *,
    image_dir: str = "jpg",
    labels_file: str = "imagelabels.mat",
    setid_file: str = "setid.mat",
) -> ImageSet:
    """Read ``imagelabels.mat`` and ``setid.mat`` (see the module docstring)."""
    root = Path(root)
    lab_path, set_path = root / labels_file, root / setid_file
    y_all = _loadmat(lab_path, ("labels",))["labels"]
    n_images = len(y_all)
    if y_all.min() < 1:
        raise DatasetError(f"{lab_path}: labels must be 1-based class numbers, found {int(y_all.min())}; download it again")
    n_classes = int(y_all.max())
    sets = _loadmat(set_path, tuple(k for _, k in SET_KEYS))
    owner: dict[int, str] = {}
    splits: dict[str, list[Sample]] = {}
    labels: dict[str, np.ndarray] = {}
    images = root / image_dir
    for split, key in SET_KEYS:
        ids = sets[key]
        bad = ids[(ids < 1) | (ids > n_images)]
        if bad.size:
            raise DatasetError(f"{set_path}: {key} holds image number {int(bad[0])}, outside 1..{n_images} ({lab_path.name} has {n_images} labels); the two files do not belong together")
        for i in ids.tolist():
            if i in owner:
                raise DatasetError(f"{set_path}: image {i} is in both {owner[i]} and {key}; download the official setid.mat again")
            owner[i] = key
        splits[split] = [
            Sample(id=f"{image_dir}/image_{i:05d}.jpg", path=safe_join(images, f"image_{i:05d}.jpg", where=f"{set_path}:{key}"))
            for i in ids.tolist()
        ]
        labels[split] = (y_all[ids - 1] - 1).astype(np.int64)
    splits["trainval"] = splits["train"] + splits["val"]
    labels["trainval"] = np.concatenate([labels["train"], labels["val"]])
    classes = [str(k) for k in range(1, n_classes + 1)]
    meta = {"unassigned_images": n_images - len(owner)}
    return ImageSet(name="flowers102", task="classification", root=root, classes=classes, splits=splits, labels=labels, meta=meta)
