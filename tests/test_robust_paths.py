"""Paths read from annotation and list files cannot escape the dataset root (``../``, absolute paths, Windows
separators) unless the user allows it; the error names the file and line. Through ``read_list`` and two
benchmark adapters (MIT-67's lists and CUB's images.txt; VOC's is in tests/datasets/test_datasets_voc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnbase.datasets.base import safe_join
from cnnbase.datasets.cub import read_cub
from cnnbase.datasets.folder import read_list
from cnnbase.datasets.mit67 import read_mit67
from cnnbase.errors import DatasetError
from tests.fakes import benchmarks as fakes

ESCAPES = {
    "dot-dot": "../outside.jpg",
    "nested dot-dot": "imgs/../../outside.jpg",
    "deep dot-dot": "imgs/a/b/../../../../outside.jpg",
    "absolute": "{outside}",
    "absolute system file": "/etc/passwd",
    "windows separators": "..\\outside.jpg",
    "windows drive": "C:\\data\\outside.jpg",
}


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "ds"
    fakes.jpeg(root / "imgs" / "a.jpg")
    fakes.jpeg(root / "imgs" / "b.jpg", seed=1)
    outside = fakes.jpeg(tmp_path / "outside.jpg", seed=2)
    return {"root": root, "outside": outside}


def _list(root: Path, rel: str) -> Path:
    return fakes.write(root / "list.txt", ["# comment", "imgs/a.jpg\tcat\ttrain", f"{rel}\tdog\ttest", "imgs/b.jpg\tdog\ttrain"])


@pytest.mark.parametrize("rel", ESCAPES.values(), ids=list(ESCAPES))
def test_list_file_escape_is_refused_naming_file_and_line(layout: dict[str, Path], rel: str) -> None:
    rel = rel.format(outside=layout["outside"])
    lst = _list(layout["root"], rel)
    with pytest.raises(DatasetError) as ei:
        read_list(lst)
    msg = str(ei.value)
    assert msg.startswith(f"{lst}:3: path {rel!r} points outside the dataset root")
    assert "allow_outside" in msg and "\n" not in msg


def test_allow_outside_lets_the_user_opt_in(layout: dict[str, Path]) -> None:
    ds = read_list(_list(layout["root"], "../outside.jpg"), allow_outside=True)
    (s,) = ds.splits["test"]
    assert s.path.resolve() == layout["outside"].resolve() and s.id == "../outside.jpg"
    ds = read_list(_list(layout["root"], str(layout["outside"])), allow_outside=True)
    assert ds.splits["test"][0].path == layout["outside"]


@pytest.mark.parametrize("rel", ["imgs/x/../b.jpg", "./imgs/b.jpg", "imgs\\..\\imgs/b.jpg", "{root}/imgs/b.jpg"])
def test_paths_that_stay_inside_are_accepted_and_normalised(layout: dict[str, Path], rel: str) -> None:
    rel = rel.format(root=layout["root"])
    ds = read_list(_list(layout["root"], rel))
    p = ds.splits["test"][0].path
    assert p.resolve() == (layout["root"] / "imgs" / "b.jpg").resolve()
    assert ".." not in p.parts  # the path opened is the path checked


def test_relative_list_path_with_dot_dot_inside(layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """`cnnbase extract tiny_cnn list.txt` from the list's own folder: the root is ``.``; a ``..`` that stays
    inside must not be mistaken for an escape (it was: ``normpath('b.jpg')`` does not start with ``'./'``)."""
    _list(layout["root"], "imgs/x/../b.jpg")
    monkeypatch.chdir(layout["root"])
    ds = read_list("list.txt")
    assert Path(ds.splits["test"][0].path).resolve() == (layout["root"] / "imgs" / "b.jpg").resolve()
    with pytest.raises(DatasetError, match=r"list\.txt:3: path '\.\./outside\.jpg' points outside"):
        _list(Path("."), "../outside.jpg")
        read_list("list.txt")


def test_root_at_filesystem_top() -> None:
    assert safe_join(Path("/"), "srv/x/../a.jpg", where="l:1") == Path("/srv/a.jpg")  # was refused: '//' prefix
    with pytest.raises(DatasetError, match="l:1: path"):
        safe_join(Path("/srv"), "../etc/passwd", where="l:1")


def test_mit67_list_escape_names_file_and_line(tmp_path: Path) -> None:
    fakes.make_mit67(tmp_path)
    f = tmp_path / "TrainImages.txt"
    f.write_text(f.read_text() + "\ngameroom/../../../outside.jpg")
    with pytest.raises(DatasetError, match=rf"{f}:5: path 'gameroom/\.\./\.\./\.\./outside\.jpg' points outside"):
        read_mit67(tmp_path)


@pytest.mark.parametrize("rel", ["002.Laysan_Albatross/../../../outside.jpg", "002.Laysan_Albatross/../../../../../../../etc/passwd"])
def test_cub_images_txt_escape_names_file_and_line(tmp_path: Path, rel: str) -> None:
    info = fakes.make_cub(tmp_path)
    f = info["base"] / "images.txt"
    lines = f.read_text().splitlines()
    lines[2] = f"3 {rel}"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{f}:3: .*outside"):
        read_cub(tmp_path)
