"""Oquab et al. 2014 §3.3: image scores from patch scores.

``score(C_n) = (1/M) Σ_i y(C_n | P_i)^k`` over the ``M`` patches of an image, with ``k = 5`` (the paper's value,
tuned on validation). ``k = 1`` is the plain mean; large ``k`` approaches the maximum over patches (after the
power, the mean is dominated by the most confident patches).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def aggregate_scores(probs: np.ndarray, image_index: np.ndarray, n_images: int, *, k: float = 5.0) -> np.ndarray:
    """Per-image class scores ``(n_images, C)``: the mean over each image's patches of ``probs ** k``.

    Args:
        probs: ``(P, C)`` per-patch class probabilities (typically the object classes, background column removed).
        image_index: ``(P,)`` the image each patch belongs to, in ``[0, n_images)``.
        n_images: number of images; an image without patches gets NaN scores.
        k: the exponent (> 0).

    Example:
        >>> import numpy as np
        >>> p = np.array([[0.5, 0.0], [1.0, 0.5], [0.2, 0.2]])
        >>> aggregate_scores(p, np.array([0, 0, 1]), 2, k=2).round(4).tolist()
        [[0.625, 0.125], [0.04, 0.04]]
    """
    if not k > 0:
        raise ConfigError(f"the aggregation exponent k must be positive, got {k}")
    probs = np.asarray(probs, dtype=np.float64)
    idx = np.asarray(image_index, dtype=np.int64)
    if probs.ndim != 2 or len(idx) != len(probs):
        raise ValueError(f"probs must be (P, C) and image_index (P,), got {probs.shape} and {idx.shape}")
    sums = np.zeros((n_images, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, idx, probs**k)
    counts = np.bincount(idx, minlength=n_images).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / counts[:, None]
    out[counts == 0] = np.nan
    return out
