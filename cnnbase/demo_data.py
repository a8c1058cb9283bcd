"""A small generated image set for `cnnbase demo` and the tests: four texture classes whose colours are random.

Classes: horizontal stripes, vertical stripes, checkerboard, rings. Every image draws a random colour and uses it with its complement (so every image has the same mean colour), and draws its stripe
period, phase and noise at random, independently of its class, so the mean colour says nothing about the class
(:func:`mean_colour_baseline` checks it) while the spatial structure does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("horizontal", "vertical", "checker", "rings")


def texture(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``cls``."""
    period = rng.uniform(6, 16)
    phase = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if cls == "horizontal":
        m = np.sin(2 * np.pi * yy / period + phase)
    elif cls == "vertical":
        m = np.sin(2 * np.pi * xx / period + phase)
    elif cls == "checker":
        m = np.sin(2 * np.pi * xx / period + phase) * np.sin(2 * np.pi * yy / period + phase)
    else:
        cx, cy = rng.uniform(0.3, 0.7, size=2) * size
        m = np.sin(2 * np.pi * np.hypot(xx - cx, yy - cy) / period + phase)
    a = rng.uniform(0, 255, size=3)
    b = 255.0 - a  # complementary colours: every image has the same mean colour, whatever its class
    t = (m > 0).astype(np.float32)[..., None]
    img = a * t + b * (1 - t) + rng.normal(0, 20, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_texture_dataset(root: Path, *, per_class: int = 40, test_per_class: int = 10, size: int = 96, seed: int = 0) -> Path:
    """Write ``root/{train,test}/<class>/<n>.jpg`` (skipped if already complete); returns ``root``.

    Each class needs at least one training and one test image: ``1 <= test_per_class < per_class``.
    """
    if not 1 <= test_per_class < per_class:
        from .errors import ConfigError

        raise ConfigError(
            f"{per_class} image(s) per class with {test_per_class} for testing leaves a split empty; give per_class 2 or "
            "more and test_per_class between 1 and per_class - 1"
        )
    root = Path(root)
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == f"{per_class},{test_per_class},{size},{seed}":
        return root
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        for split, n in (("train", per_class - test_per_class), ("test", test_per_class)):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(texture(cls, size, rng)).save(d / f"{i:03d}.jpg", quality=90)
    marker.write_text(f"{per_class},{test_per_class},{size},{seed}")
    return root


def mean_colour_baseline(root: Path) -> float:
    """Accuracy of a nearest-centroid classifier on mean RGB (train → test): should be near chance (25%)."""
    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for k, cls in enumerate(CLASSES):
            for p in sorted((root / split / cls).glob("*.jpg")):
                xs.append(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).mean(axis=(0, 1)))
                ys.append(k)
        return np.array(xs), np.array(ys)

    xtr, ytr = load("train")
    xte, yte = load("test")
    centroids = np.stack([xtr[ytr == k].mean(0) for k in range(len(CLASSES))])
    pred = np.argmin(((xte[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == yte).mean())
