"""Fixtures for the dataset readers: fake official layouts under tmp_path, and a datasets.yaml pointing at them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:  # `import tests.fakes` also under plain `pytest` (rootdir not on sys.path)
    sys.path.insert(0, str(_REPO))

from tests.fakes import benchmarks as fakes  # noqa: E402


@pytest.fixture
def fake() -> object:
    """The :mod:`tests.fakes.benchmarks` module."""
    return fakes


def write_yaml(path: Path, entries: dict) -> Path:
    """A datasets.yaml with ``entries`` (name -> entry dict)."""
    path.write_text(yaml.safe_dump({"datasets": entries}, sort_keys=False))
    return path


@pytest.fixture
def yaml_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``yaml_file(entries)`` writes a datasets.yaml in tmp_path and returns its path."""
    return lambda entries: write_yaml(tmp_path / "datasets.yaml", entries)
