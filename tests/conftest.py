"""Shared fixtures: an isolated cnnbase home, small generated image sets, one controllable seed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _images import write_images  # noqa: F401  (re-exported for fixtures)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache, results or torch hub from a test."""
    home = tmp_path_factory.mktemp("cnnbase_home")
    monkeypatch.setenv("CNNBASE_HOME", str(home))
    monkeypatch.setenv("CNNBASE_DATA", str(home / "data"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.delenv("CNNBASE_DATASETS", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # Rich tables unwrapped, so tests can search their text


@pytest.fixture
def seed() -> int:
    """One controllable seed: CNNBASE_TEST_SEED overrides it (printed on failure by pytest's -ra summary)."""
    return int(os.environ.get("CNNBASE_TEST_SEED", "0"))


@pytest.fixture
def texture_set(tmp_path: Path) -> Path:
    """The demo's texture classes, small: 4 classes × (12 train + 4 test) 96-px images."""
    from cnnbase.demo_data import make_texture_dataset

    return make_texture_dataset(tmp_path / "textures", per_class=16, test_per_class=4, size=96)


@pytest.fixture
def random_folder(tmp_path: Path) -> Path:
    """root/<class>/* with 3 classes × 5 random images (no split folders)."""
    root = tmp_path / "folder"
    write_images(root, {"a": 5, "b": 5, "c": 5})
    return root


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread for a module of tiny problems (``pytestmark = pytest.mark.usefixtures(...)``): on 2 shared
    cores two spinning threads make them 5-10x slower, and the SVM checkpoint key holds the thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
