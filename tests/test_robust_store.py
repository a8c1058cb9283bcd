"""Feature store under damage, in-process: corrupted or truncated shards are recomputed (end to end, only
them), a damaged ``features.npy`` is reported, a full disk gives one clear error and leaves the entry
consistent and resumable, and temporary files left by a dead writer are ignored and cleaned.

(Interrupting real processes is in test_robust_kill.py; the basic resume/corruption checks in test_store.py.)
"""

from __future__ import annotations

import builtins
import errno
import json
import os
from pathlib import Path

import pytest
from _images import write_images

from cnnbase.errors import StoreError
from cnnbase.features import store as store_mod
from cnnbase.features.store import FeatureStore, StoreEntry
from cnnbase.runner import Context, FeatureOptions, extract

OPTS = FeatureOptions(weights="random", workers=0, batch_size=2, shard_size=4, precision="fp32", compile=False)
N, SHARD, N_SHARDS = 12, 4, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny problems, one thread


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("robust_store") / "imgs"
    write_images(root, {"a": 4, "b": 4, "c": 4}, size=32)
    return root


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    (e,) = extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=_ctx(tmp_path_factory.mktemp("ref")))
    return (e.path / "features.npy").read_bytes()


def _ctx(tmp: Path) -> Context:
    return Context(store=FeatureStore(tmp / "store"), progress=False)


def _run(images: Path, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> tuple[StoreEntry, list[int]]:
    """Extract (resuming whatever is there) and return the entry and the shard indices written now."""
    real, written = StoreEntry.write_shard, []

    def spy(self, i, a, s):  # type: ignore[no-untyped-def]
        written.append(i)
        real(self, i, a, s)

    monkeypatch.setattr(StoreEntry, "write_shard", spy)
    (e,) = extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=ctx)
    monkeypatch.setattr(StoreEntry, "write_shard", real)
    return e, written


def _partial_entry(images: Path, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> StoreEntry:
    """An entry with every shard written and checksummed, killed just before finalize."""

    def killed(self, *a, **k):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreEntry, "finalize", killed)
    with pytest.raises(KeyboardInterrupt):
        extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=ctx)
    monkeypatch.undo()
    (d,) = [m.parent for m in ctx.store.root.glob("*/*/*/manifest.json")]
    m = json.loads((d / "manifest.json").read_text())
    e = StoreEntry(d, m["key"], m["fields"])
    assert all(e.shard_ok(i, SHARD) for i in range(N_SHARDS)) and not e.complete
    return e


def _flip(p: Path, at: int = -5) -> None:
    b = bytearray(p.read_bytes())
    b[at] ^= 0xFF
    p.write_bytes(bytes(b))


def _edit_meta(p: Path, **change) -> None:  # type: ignore[no-untyped-def]
    m = json.loads(p.read_text())
    m.update(change)
    p.write_text(json.dumps(m))


DAMAGE = {
    "flipped byte, same size": lambda e: _flip(e.shard_path(1)),
    "truncated": lambda e: e.shard_path(1).write_bytes(e.shard_path(1).read_bytes()[:-7]),
    "extended": lambda e: e.shard_path(1).write_bytes(e.shard_path(1).read_bytes() + b"\0" * 16),
    "emptied": lambda e: e.shard_path(1).write_bytes(b""),
    "another shard's bytes": lambda e: e.shard_path(1).write_bytes(e.shard_path(0).read_bytes()),
    "shard file missing": lambda e: e.shard_path(1).unlink(),
    "checksum file missing": lambda e: e.shard_path(1).with_suffix(".json").unlink(),
    "checksum file not JSON": lambda e: e.shard_path(1).with_suffix(".json").write_bytes(b'{"sha256": "ab'),
    "checksum file a list": lambda e: e.shard_path(1).with_suffix(".json").write_text("[1, 2]"),
    "checksum file wrong rows": lambda e: _edit_meta(e.shard_path(1).with_suffix(".json"), shape=[3, 32]),
    "checksum file wrong digest": lambda e: _edit_meta(e.shard_path(1).with_suffix(".json"), sha256="0" * 64),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_shard_is_recomputed_alone(
    damage: str, images: Path, reference: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx(tmp_path)
    e = _partial_entry(images, ctx, monkeypatch)
    DAMAGE[damage](e)
    assert not e.shard_ok(1, SHARD) and e.shard_ok(0, SHARD) and e.shard_ok(2, SHARD)
    e2, written = _run(images, ctx, monkeypatch)
    assert written == [1]  # detected, recomputed, and nothing else redone
    assert (e2.path / "features.npy").read_bytes() == reference
    assert e2.load(verify=True).array.shape == (N, 32)


def test_shard_damaged_after_its_check_fails_finalize_cleanly(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard that changes between the resume check and finalize is never concatenated into features.npy."""
    ctx = _ctx(tmp_path)
    e = _partial_entry(images, ctx, monkeypatch)
    real = StoreEntry.finalize

    def damage_then_finalize(self, *a, **k):  # type: ignore[no-untyped-def]
        _flip(self.shard_path(2))
        return real(self, *a, **k)

    monkeypatch.setattr(StoreEntry, "finalize", damage_then_finalize)
    with pytest.raises(StoreError, match=r"00002\.npy .*changed on disk") as ei:
        extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=ctx)
    assert "\n" not in str(ei.value)
    assert not (e.path / "features.npy").exists() and e.manifest()["status"] == "partial"


# -- features.npy damaged after completion ------------------------------------------------------------------
@pytest.fixture
def complete(images: Path, tmp_path: Path) -> StoreEntry:
    (e,) = extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=_ctx(tmp_path))
    return e


def test_flipped_byte_in_features_is_reported_by_verify(complete: StoreEntry) -> None:
    f = complete.path / "features.npy"
    _flip(f, -3)  # same size: only the checksum can tell, and the changed mtime makes load run it
    with pytest.raises(StoreError, match="fails its checksum \\(changed on disk\\); delete .* and rerun extract"):
        complete.load()
    complete.load(verify=False)  # the size check alone passes


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:-16]), "truncated"),
        (lambda f: f.write_bytes(f.read_bytes()[:100]), "truncated"),
        (lambda f: f.write_bytes(b""), "truncated"),
        (lambda f: f.write_bytes(f.read_bytes() + b"junk"), "truncated|wrong size"),
        (lambda f: f.unlink(), "is missing"),
    ],
    ids=["16-bytes-short", "header-only", "empty", "extended", "deleted"],
)
def test_wrong_size_features_always_reported(complete: StoreEntry, damage, match: str, verify: bool) -> None:  # type: ignore[no-untyped-def]
    damage(complete.path / "features.npy")
    with pytest.raises(StoreError, match=match):
        complete.load(verify=verify)


def test_corrupted_header_is_a_store_error(complete: StoreEntry) -> None:
    _flip(complete.path / "features.npy", 0)  # the .npy magic string: same size, numpy cannot parse it
    with pytest.raises(StoreError, match=r"features\.npy is corrupted \(.*\); delete"):
        complete.load(verify=False)
    with pytest.raises(StoreError, match="fails its checksum"):
        complete.load()


@pytest.mark.parametrize("text", ["", "{", "[]", "null"])
def test_damaged_manifest_is_reported_not_reused(complete: StoreEntry, images: Path, tmp_path: Path, text: str) -> None:
    complete.manifest_path.write_text(text)
    with pytest.raises(StoreError, match="manifest|does not match"):
        extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=_ctx(tmp_path))


# -- leftovers of a dead writer -------------------------------------------------------------------------------
def test_stale_temporary_files_are_ignored_and_removed(
    images: Path, reference: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx(tmp_path)
    e = _partial_entry(images, ctx, monkeypatch)
    e.shard_path(2).unlink()
    dead = 2**22 + 12345  # no such pid
    stale = [
        e.path / "shards" / f".00002.npy.{dead}.tmp",  # a killed shard write
        e.path / "shards" / f".00001.json.{dead}.tmp",
        e.path / f".features.npy.{dead}.tmp",  # a killed finalize
        e.path / f".manifest.json.{dead}.tmp",
    ]
    for p in stale:
        p.write_bytes(b"\x93NUMPY garbage from a dead writer")
    assert [p.name for p, _ in ctx.store.manifests()] == [e.path.name]  # listing ignores them
    e2, written = _run(images, ctx, monkeypatch)
    assert written == [2]
    assert (e2.path / "features.npy").read_bytes() == reference
    assert not any(p.exists() for p in stale) and not list(e2.path.rglob("*.tmp"))


# -- disk full ----------------------------------------------------------------------------------------------
class _FullDisk:
    """``open``/``os.fsync`` stand-ins: the ``nth`` write of a temporary file whose name starts with ``prefix``
    gets half its bytes onto the disk, then ENOSPC (or fails at fsync), as a full file system does."""

    def __init__(self, prefix: str, how: str, nth: int = 0, err: int = errno.ENOSPC) -> None:
        self.prefix, self.how, self.nth, self.err, self.seen, self.on = prefix, how, nth, err, 0, True
        self.fds: set[int] = set()

    def _target(self, name: str) -> bool:
        if not (self.on and Path(name).name.startswith(self.prefix) and name.endswith(".tmp")):
            return False
        self.seen += 1
        return self.seen - 1 == self.nth

    def open(self, file, mode="r", *a, **k):  # type: ignore[no-untyped-def]
        f = builtins.open(file, mode, *a, **k)
        if "w" in mode and self._target(str(file)):
            if self.how == "write":
                return _Limited(f, self.err)
            self.fds.add(f.fileno())
        return f

    def fsync(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.discard(fd)
            raise OSError(self.err, os.strerror(self.err))
        _real_fsync(fd)


_real_fsync = os.fsync


class _Limited:
    def __init__(self, f, err: int) -> None:  # type: ignore[no-untyped-def]
        self.f, self.err = f, err

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(self.err, os.strerror(self.err))

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.f, name)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        self.f.close()


FULL = [
    # where the disk fills up                 tmp prefix         how      nth  shards redone on rerun
    ("shard data", ".00001.npy.", "write", 0, [1, 2]),
    ("shard fsync", ".00001.npy.", "fsync", 0, [1, 2]),
    ("shard checksum file", ".00001.json.", "write", 0, [1, 2]),
    ("first manifest", ".manifest.json.", "write", 0, [0, 1, 2]),
    ("features.npy at finalize", ".features.npy.", "write", 0, []),
    ("features.npy fsync", ".features.npy.", "fsync", 0, []),
    ("complete manifest at finalize", ".manifest.json.", "write", 1, []),
]


@pytest.mark.parametrize(("where", "prefix", "how", "nth", "redo"), FULL, ids=[f[0] for f in FULL])
def test_disk_full_is_one_clear_error_and_the_store_stays_consistent(
    where: str, prefix: str, how: str, nth: int, redo: list[int],
    images: Path, reference: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    disk = _FullDisk(prefix, how, nth)
    monkeypatch.setattr(store_mod, "open", disk.open, raising=False)
    monkeypatch.setattr(os, "fsync", disk.fsync)
    ctx = _ctx(tmp_path)
    with pytest.raises(StoreError) as ei:
        extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=ctx)
    msg = str(ei.value)
    assert msg.startswith("disk full while writing ") and "\n" not in msg and "free space and rerun" in msg
    assert disk.seen == nth + 1
    (d,) = [p for p in ctx.store.root.glob("*/*/*") if p.is_dir()]
    assert not list(d.rglob("*.tmp"))  # nothing partial left behind
    m = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() else None
    if m is not None:
        e = StoreEntry(d, m["key"], m["fields"])
        assert m["status"] == "partial" and not e.complete
        done = [i for i in range(N_SHARDS) if e.shard_ok(i, SHARD)]
        assert done == [i for i in range(N_SHARDS) if i not in redo]  # earlier shards intact
        f = d / "features.npy"
        assert not f.exists() or f.read_bytes() == reference  # never a partial final file
        with pytest.raises(StoreError, match="not finished"):
            e.load()
    # space freed: the same command finishes, redoing only what was not written
    disk.on = False
    e2, written = _run(images, ctx, monkeypatch)
    assert written == redo
    assert (e2.path / "features.npy").read_bytes() == reference and e2.complete


@pytest.mark.parametrize(
    ("err", "match"),
    [(getattr(errno, "EDQUOT", errno.ENOSPC), "disk full while writing"), (errno.EROFS, "cannot write .*: Read-only file system; check")],
)
def test_other_write_errors_are_one_line_store_errors(err: int, match: str, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "open", _FullDisk(".00000.npy.", "write", err=err).open, raising=False)
    with pytest.raises(StoreError, match=match) as ei:
        extract("tiny_cnn", str(images), splits=["all"], opts=OPTS, ctx=_ctx(tmp_path))
    assert "\n" not in str(ei.value)
