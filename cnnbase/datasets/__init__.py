"""Dataset adapters: each official on-disk format → :class:`~cnnbase.datasets.base.ImageSet`.

``open_dataset("voc2007")`` reads the ``datasets.yaml`` entry; ``open_dataset("path/to/folder")`` and
``open_dataset("list.txt")`` use the generic adapters.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..config import DatasetConfig, load_dataset_configs
from ..errors import DatasetError
from .base import ADAPTERS, ImageSet, Sample, register_adapter

# Adapter modules register themselves on import; a module missing here is simply not available.
_ADAPTER_MODULES = (
    "folder",
    "voc",
    "mit67",
    "cub",
    "flowers",
    "attributes",
    "oxford_paris",
    "revisited",
    "holidays",
    "ukbench",
)


def _import_adapters() -> None:
    for mod in _ADAPTER_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{mod}":
                raise


_import_adapters()


def open_dataset(
    name: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    datasets: str | os.PathLike[str] | None = None,
    **options: object,
) -> ImageSet:
    """Read a dataset by ``datasets.yaml`` name, or from an image folder / list file path.

    Args:
        name: a name from ``datasets.yaml`` (``"voc2007"``), a folder of class folders, or a list file.
        root: overrides the entry's root.
        datasets: which ``datasets.yaml`` to read (default: see :mod:`cnnbase.config`).
        **options: override the entry's adapter options.

    Example:
        >>> ds = open_dataset("path/to/flowers_by_class")  # doctest: +SKIP
        >>> ds.task, len(ds.samples("train"))  # doctest: +SKIP
        ('classification', 120)
    """
    configs = load_dataset_configs(datasets)
    key = os.fspath(name)
    if key in configs:
        cfg = configs[key]
        ds = ADAPTERS.get(cfg.adapter)(Path(root).expanduser() if root else cfg.root, **{**cfg.options, **options})
        ds.name = key
        ds.meta.setdefault("metric", cfg.metric)
        return ds
    path = Path(key).expanduser()
    if path.is_dir():
        ds = ADAPTERS.get("folder")(path, **options)
    elif path.is_file():
        ds = ADAPTERS.get("list")(path, **options)
    else:
        near = ", ".join(sorted(configs))
        raise DatasetError(f"{key!r} is neither a dataset in datasets.yaml ({near}) nor an existing folder or list file")
    return ds


def dataset_config(name: str, datasets: str | os.PathLike[str] | None = None) -> DatasetConfig | None:
    """The ``datasets.yaml`` entry for ``name`` (None for folder/list paths)."""
    return load_dataset_configs(datasets).get(name)


__all__ = ["ADAPTERS", "ImageSet", "Sample", "dataset_config", "open_dataset", "register_adapter"]
