"""Small generated images for tests (a module with a unique name, importable from any test folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_images(root: Path, classes: dict[str, int], *, size: int = 40, seed: int = 0, split: str | None = None) -> list[Path]:
    """Write ``n`` random-noise JPEGs per class under ``root[/split]/<class>/`` (names with spaces)."""
    rng = np.random.default_rng(seed)
    out = []
    for cls, n in classes.items():
        d = root / split / cls if split else root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, size=(size, size + 8, 3), dtype=np.uint8)
            p = d / f"img {i:02d}.jpg"  # a space in every name
            Image.fromarray(arr).save(p, quality=90)
            out.append(p)
    return out
