"""Every user-facing error through the command line: one line on stderr (what, which file or sample, how to fix),
a non-zero exit, and a traceback only with ``--debug``. Runs ``python -m cnnbase`` in a real subprocess once, the
other cases in forked processes (``_robust_child.py``) running the same entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _images import write_images
from _robust_child import Child

from cnnbase.features.store import FeatureStore
from cnnbase.runner import Context, FeatureOptions, extract

pytestmark = pytest.mark.timeout(300)

OPTS = ["--weights", "random", "--workers", "0", "--no-progress", "--split", "all", "--precision", "fp32"]


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def run(tmp_path: Path, name: str, *argv: str, hooks: dict | None = None) -> tuple[int, str]:
    c = Child(list(argv), tmp_path, name, hooks)
    return c.wait(), c.stderr


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    write_images(root, {"a": 4, "b": 4, "c": 4}, size=32)
    return root


def test_missing_dataset_real_subprocess(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder"
    out = subprocess.run(
        [sys.executable, "-m", "cnnbase", "extract", "tiny_cnn", str(missing), *OPTS, "--store", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 1
    line = one_line_error(out.stderr)
    assert str(missing) in line and "neither a dataset" in line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="torch sees a CUDA device here")
def test_cuda_device_without_cuda(tmp_path: Path, images: Path) -> None:
    rc, err = run(tmp_path, "nocuda", "extract", "tiny_cnn", str(images), *OPTS, "--store", str(tmp_path / "s"), "--device", "cuda")
    assert rc == 1
    line = one_line_error(err)
    assert "--device cuda" in line and "no CUDA device" in line and "--device cpu" in line
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.npy"))  # refused before any work


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    rc, err = run(tmp_path, "debug", "--debug", "extract", "tiny_cnn", str(tmp_path / "nope"), *OPTS, "--store", str(tmp_path / "s"))
    assert rc != 0 and "Traceback" in err and "DatasetError" in err


@pytest.fixture
def entry(images: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A complete entry made in-process with the same options the CLI runs use (so the same key)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        o = FeatureOptions(weights="random", workers=0, precision="fp32")
        (e,) = extract("tiny_cnn", str(images), splits=["all"], opts=o, ctx=Context(store=FeatureStore(tmp_path / "s"), progress=False))
    finally:
        torch.set_num_threads(before)
    return e


def test_truncated_store_entry(entry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = entry.path / "features.npy"
    f.write_bytes(f.read_bytes()[:-10])
    rc, err = run(tmp_path, "export", "features", "export", entry.key[:10], str(tmp_path / "o.npz"), "--store", str(tmp_path / "s"))
    assert rc == 1
    line = one_line_error(err)
    assert str(f) in line and "truncated" in line and "rerun extract" in line


def test_unreadable_manifest(entry, images: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    entry.manifest_path.write_text('{"key": "abc", "fields": {"backb')
    rc, err = run(tmp_path, "manifest", "extract", "tiny_cnn", str(images), *OPTS, "--store", str(tmp_path / "s"))
    assert rc == 1
    line = one_line_error(err)
    assert f"unreadable manifest {entry.manifest_path}" in line and "delete the folder" in line


@pytest.mark.parametrize("kind", ["missing", "garbage", "directory"])
def test_bad_weights_path(kind: str, images: Path, tmp_path: Path) -> None:
    w = tmp_path / "w.pt"
    if kind == "garbage":
        w.write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    elif kind == "directory":
        w.mkdir()
    argv = ["extract", "tiny_cnn", str(images), *OPTS, "--store", str(tmp_path / "s")]
    argv[argv.index("random")] = str(w)
    rc, err = run(tmp_path, f"w-{kind}", *argv)
    assert rc == 1
    line = one_line_error(err)
    assert str(w) in line and ("--weights" in line or "state_dict" in line)


def test_bad_images_fail_lists_every_bad_file(images: Path, tmp_path: Path) -> None:
    """Three bad files in three different shards: the error lists all of them with their reasons."""
    (images / "a" / "zz page.jpg").write_bytes(b"<html><body>404 image not found</body></html>")
    (images / "b" / "zz empty.jpg").write_bytes(b"")
    good = (images / "c" / "img 00.jpg").read_bytes()
    (images / "c" / "zz cut.jpg").write_bytes(good[: len(good) // 2])
    rc, err = run(tmp_path, "bad", "extract", "tiny_cnn", str(images), *OPTS, "--store", str(tmp_path / "s"),
                  hooks={"shard_size": 3})  # fmt: skip
    assert rc == 1
    line = one_line_error(err)
    assert "3 bad image(s)" in line and "--on-bad-image skip" in line
    for rel, reason in (("a/zz page.jpg", "not an image"), ("b/zz empty.jpg", "empty file"), ("c/zz cut.jpg", "truncated")):
        assert f"{images / rel}: {reason}" in line
    assert not list((tmp_path / "s").rglob("features.npy"))


def test_annotation_path_escape(tmp_path: Path) -> None:
    write_images(tmp_path / "ds" / "imgs", {"x": 2}, size=32)
    lst = tmp_path / "ds" / "list.txt"
    lst.write_text("imgs/x/img 00.jpg\tx\tall\n../../etc/passwd\tx\tall\n")
    rc, err = run(tmp_path, "escape", "extract", "tiny_cnn", str(lst), *OPTS, "--store", str(tmp_path / "s"))
    assert rc == 1
    line = one_line_error(err)
    assert f"{lst}:2: path '../../etc/passwd' points outside the dataset root" in line


def test_truncated_records_file(tmp_path: Path) -> None:
    res = tmp_path / "records.jsonl"
    res.write_text('{"run_id": "a", "dataset": "d", "metric": "accuracy", "value": 0.5}\n{"run_id": "b", "data')
    rc, err = run(tmp_path, "board", "leaderboard", "--results", str(res))
    assert rc == 1
    assert one_line_error(err).startswith(f"error: {res}:2: not a JSON record")


@pytest.mark.parametrize("where", ["under a file", "read-only folder"])
def test_unwritable_out_is_one_line(where: str, tmp_path: Path) -> None:
    """An OSError (a path under a regular file; a read-only folder) is one line on stderr, exit 1, no traceback."""
    import os

    if where == "read-only folder" and (not hasattr(os, "geteuid") or os.geteuid() == 0):
        pytest.skip("root ignores folder permissions")
    res = tmp_path / "records.jsonl"
    res.write_text('{"run_id": "a", "dataset": "d", "metric": "accuracy", "value": 0.5}\n')
    parent = tmp_path / "blocked"
    if where == "under a file":
        parent.write_text("a file, not a folder")
    else:
        parent.mkdir()
        parent.chmod(0o555)
    try:
        rc, err = run(tmp_path, "ro", "leaderboard", "--results", str(res), "-f", "csv", "--out", str(parent / "t.csv"))
    finally:
        if parent.is_dir():
            parent.chmod(0o755)
    assert rc == 1
    line = one_line_error(err)
    assert line.startswith(f"error: cannot write {parent}") and "choose a writable --out, or fix its permissions" in line
