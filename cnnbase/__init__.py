"""cnnbase: how well do a network's off-the-shelf features transfer?

The pipeline of Razavian et al. 2014 ("CNN Features off-the-shelf") and Oquab et al. 2014, importable for
notebooks. Each stage is cached: features in a content-addressed store, SVMs next to them, results as records.

Example:
    >>> import cnnbase
    >>> cnnbase.extract("alexnet", "path/to/images", layers="fc6,fc7")  # doctest: +SKIP
    >>> rec = cnnbase.evaluate("alexnet", "path/to/images", layer="fc6")  # doctest: +SKIP
    >>> rec["metric"], round(rec["value"], 3)  # doctest: +SKIP
    ('accuracy', 0.912)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "extract": "runner",
    "load_features": "runner",
    "train_svm": "runner",
    "evaluate": "runner",
    "normalize": "runner",
    "FeatureOptions": "runner",
    "SVMOptions": "runner",
    "Context": "runner",
    "open_dataset": "datasets",
    "load_backbone": "backbones",
    "list_backbones": "backbones",
    "FeatureStore": "features.store",
    "read_records": "results",
    "build_table": "results",
    "render": "results",
}


def __getattr__(name: str) -> Any:
    """Import the public API lazily so `cnnbase --help` stays quick."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'cnnbase' has no attribute {name!r}")


__all__ = ["__version__", *_API]
