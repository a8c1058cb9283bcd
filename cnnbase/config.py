"""Where things live and how ``datasets.yaml`` is read.

Precedence everywhere: command-line option > protocol card > ``datasets.yaml`` > built-in default.

Paths:

* feature store: ``--store DIR`` > ``$CNNBASE_HOME/features`` > ``~/.cache/cnnbase/features``
  (``$XDG_CACHE_HOME`` respected);
* dataset roots: the ``root:`` of a ``datasets.yaml`` entry, with ``~`` and ``$VARS`` expanded; a relative root
  is taken under ``$CNNBASE_DATA`` (default ``~/cnnbase-data``); ``--root DIR`` overrides it;
* ``datasets.yaml`` itself: ``--datasets FILE`` > ``$CNNBASE_DATASETS`` > ``./datasets.yaml`` > the copy shipped
  with the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """A file shipped with cnnbase (``datasets.yaml``, ``tasks/...``): packaged copy first, then the source tree."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.exists():
            return candidate
    raise ConfigError(f"cnnbase resource {name!r} not found next to the package; reinstall cnnbase")


def cnnbase_home() -> Path:
    """``$CNNBASE_HOME``, else ``$XDG_CACHE_HOME/cnnbase``, else ``~/.cache/cnnbase``."""
    if os.environ.get("CNNBASE_HOME"):
        return Path(os.environ["CNNBASE_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "cnnbase"


def default_store() -> Path:
    """Where features go when no ``--store`` is given."""
    return cnnbase_home() / "features"


def data_home() -> Path:
    """``$CNNBASE_DATA`` (default ``~/cnnbase-data``): the parent of relative dataset roots."""
    return Path(os.environ.get("CNNBASE_DATA") or "~/cnnbase-data").expanduser()


def expand_path(value: str | os.PathLike[str], base: Path | None = None) -> Path:
    """Expand ``~`` and ``$VARS``; a relative result is resolved under ``base`` (default: the cwd)."""
    text = os.path.expandvars(os.fspath(value))
    if "$" in text:
        raise ConfigError(f"path {value!r} uses an environment variable that is not set; export it or edit the path")
    p = Path(text).expanduser()
    return p if p.is_absolute() or base is None else base / p


@dataclass(frozen=True)
class DatasetConfig:
    """One ``datasets.yaml`` entry: how to read a dataset and how it is evaluated."""

    name: str
    adapter: str
    task: str
    root: Path
    metric: str
    train_split: str | None = None
    test_split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    download: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REQUIRED = ("adapter", "task", "root", "metric")


def datasets_file(path: str | os.PathLike[str] | None = None) -> Path:
    """Which ``datasets.yaml`` is in force (see the module docstring for the order)."""
    if path:
        return Path(path).expanduser()
    if os.environ.get("CNNBASE_DATASETS"):
        return Path(os.environ["CNNBASE_DATASETS"]).expanduser()
    local = Path.cwd() / "datasets.yaml"
    return local if local.is_file() else resource_path("datasets.yaml")


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one readable line: ``line 3, column 6: expected ',' or '}', but got ':' (while parsing a flow
    mapping started at line 2, column 8)``, instead of the parser's multi-line caret art."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        text += f" ({context}" + (f" started at line {cmark.line + 1}, column {cmark.column + 1}" if cmark is not None else "") + ")"
    return text


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a UTF-8 file; an unreadable file, bad encoding or bad syntax is one :class:`ConfigError`
    line naming the file (and the line and column)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: bad YAML at {yaml_problem(exc)}; fix the syntax there") from None


@lru_cache(maxsize=8)
def _load(path: Path, mtime: float) -> dict[str, DatasetConfig]:
    raw = read_yaml(path) or {}
    entries = raw.get("datasets", raw) if isinstance(raw, dict) else None
    entries = {} if entries is None and isinstance(raw, dict) else entries
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected a mapping 'datasets: {{name: {{adapter: ..., ...}}}}'")
    out: dict[str, DatasetConfig] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: dataset {name!r} must be a mapping")
        missing = [k for k in _REQUIRED if k not in entry]
        if missing:
            raise ConfigError(f"{path}: dataset {name!r} lacks {', '.join(missing)}")
        known = set(_REQUIRED) | {"train_split", "test_split", "options", "published", "download", "description"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"{path}: dataset {name!r} has unknown field(s) {', '.join(unknown)}")
        out[name] = DatasetConfig(
            name=name,
            adapter=entry["adapter"],
            task=entry["task"],
            root=expand_path(entry["root"], data_home()),
            metric=entry["metric"],
            train_split=entry.get("train_split"),
            test_split=entry.get("test_split"),
            options=dict(entry.get("options") or {}),
            published=dict(entry.get("published") or {}),
            download=dict(entry.get("download") or {}),
            description=entry.get("description", ""),
        )
    return out


def load_dataset_configs(path: str | os.PathLike[str] | None = None) -> dict[str, DatasetConfig]:
    """All entries of the ``datasets.yaml`` in force, roots expanded."""
    f = datasets_file(path)
    if not f.is_file():
        raise ConfigError(f"datasets file {f} not found; pass --datasets FILE or set CNNBASE_DATASETS")
    return _load(f.resolve(), f.stat().st_mtime)
