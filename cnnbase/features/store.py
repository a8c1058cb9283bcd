"""The content-addressed, sharded, resumable feature store.

Layout::

    <root>/<dataset>/<split>/<backbone>-<layer>-<key12>/
        manifest.json        the key's fields, ordered sample ids, shape, dtype, status, skipped samples, versions
        features.npy         (n, d) or (n, views, d) raw activations, memory-mappable; present once complete
        shards/00000.npy     while extracting: one file per block of samples, renamed into place when whole
        shards/00000.sha256  checksum of that shard, checked before it is used
        .lock                held (flock) by the process extracting this entry

The key is the sha256 of the canonical JSON of every field that changes the numbers (backbone, weights identity,
graph node, preprocessing, jitter, pooling, precision, storage dtype, dataset, split and the hash of its ordered
sample list). Same key → the stored features are reused (a rerun does no work); any change → a new entry, never
a stale one. A manifest whose fields disagree with the key is an error, not a silent reuse.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError

FORMAT_VERSION = 1


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key_of(fields: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``fields``."""
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"disk full while writing {path}; free space and rerun (finished shards are kept)") from None
        raise
    _fsync_dir(path.parent)


def atomic_save_npy(path: Path, array: np.ndarray) -> str:
    """Save ``array`` as .npy atomically; returns its sha256."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@dataclass
class Features:
    """Features read back from the store.

    Attributes:
        array: ``(n, d)`` or ``(n, views, d)``, memory-mapped (read-only) unless loaded otherwise.
        ids: sample ids, in the order of the dataset split.
        valid: boolean ``(n,)``; False for samples skipped as bad images (their rows are NaN).
        manifest: the entry's manifest.
    """

    array: np.ndarray
    ids: list[str]
    valid: np.ndarray
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def views(self) -> int:
        return 1 if self.array.ndim == 2 else self.array.shape[1]


class StoreEntry:
    """One key's folder: shards while extracting, then ``features.npy`` + a complete manifest."""

    def __init__(self, path: Path, key: str, fields: dict[str, Any]) -> None:
        self.path, self.key, self.fields = path, key, fields

    # -- state -------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict[str, Any] | None:
        try:
            m = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"unreadable manifest {self.manifest_path} ({exc}); delete the folder to recompute") from None
        if m.get("key") != self.key or m.get("fields") != self.fields:
            raise StoreError(
                f"manifest {self.manifest_path} does not match its key (edited or corrupted); delete the folder to recompute"
            )
        return m

    @property
    def complete(self) -> bool:
        m = self.manifest()
        return bool(m and m.get("status") == "complete" and (self.path / "features.npy").is_file())

    def begin(self, sample_ids: list[str], shard_size: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Create (or validate) the manifest of a partial entry before extraction starts."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "shards").mkdir(exist_ok=True)
        m = self.manifest()
        if m is not None:
            if m["sample_ids"] != sample_ids or m["shard_size"] != shard_size:
                raise StoreError(f"{self.path}: partial entry for another sample list or shard size; delete it to restart")
            return m
        m = {
            "format": FORMAT_VERSION,
            "key": self.key,
            "fields": self.fields,
            "status": "partial",
            "sample_ids": sample_ids,
            "n": len(sample_ids),
            "shard_size": shard_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }
        self.write_manifest(m)
        return m

    def write_manifest(self, m: dict[str, Any]) -> None:
        atomic_write_bytes(self.manifest_path, (json.dumps(m, indent=1) + "\n").encode())

    # -- shards --------------------------------------------------------------------------------------
    def shard_path(self, i: int) -> Path:
        return self.path / "shards" / f"{i:05d}.npy"

    def write_shard(self, i: int, array: np.ndarray, skipped: list[dict[str, Any]]) -> None:
        """Write shard ``i`` (and its bad-image list) atomically; the checksum file is written last."""
        digest = atomic_save_npy(self.shard_path(i), array)
        meta = {"sha256": digest, "shape": list(array.shape), "skipped": skipped}
        atomic_write_bytes(self.shard_path(i).with_suffix(".json"), json.dumps(meta).encode())

    def shard_ok(self, i: int, expected_rows: int) -> bool:
        """True when shard ``i`` exists, has its checksum file, the right row count and checksum."""
        p, meta_p = self.shard_path(i), self.shard_path(i).with_suffix(".json")
        if not (p.is_file() and meta_p.is_file()):
            return False
        try:
            meta = json.loads(meta_p.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return meta.get("shape", [None])[0] == expected_rows and file_sha256(p) == meta.get("sha256")

    def finalize(self, n_shards: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Concatenate the shards into ``features.npy`` (atomically), mark complete, remove the shards."""
        m = self.manifest()
        assert m is not None
        arrays, skipped = [], []
        for i in range(n_shards):
            meta = json.loads(self.shard_path(i).with_suffix(".json").read_text())
            data = self.shard_path(i).read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise StoreError(f"shard {self.shard_path(i)} changed on disk (checksum mismatch); rerun to recompute it")
            import io

            arrays.append(np.load(io.BytesIO(data), allow_pickle=False))
            skipped.extend(meta["skipped"])
        full = np.concatenate(arrays) if arrays else np.zeros((0,), np.float32)
        digest = atomic_save_npy(self.path / "features.npy", full)
        m.update(extra)
        m.update(
            status="complete",
            shape=list(full.shape),
            dtype=str(full.dtype),
            sha256=digest,
            skipped=skipped,
            bytes=(self.path / "features.npy").stat().st_size,
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        self.write_manifest(m)
        shutil.rmtree(self.path / "shards", ignore_errors=True)
        return m

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this entry's lock; a second writer of the same key waits here, then finds the work done."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                from ..cli._console import err_console

                err_console.print(f"[yellow]waiting[/]: another process is extracting {self.path.name}")
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- reading -------------------------------------------------------------------------------------
    def load(self, *, mmap: bool = True, verify: bool = False) -> Features:
        """The complete entry's features; a size or (with ``verify``) checksum mismatch is an error."""
        m = self.manifest()
        if not m or m.get("status") != "complete":
            raise StoreError(f"{self.path}: extraction not finished; rerun `cnnbase extract` with the same options")
        f = self.path / "features.npy"
        if not f.is_file() or f.stat().st_size != m["bytes"]:
            raise StoreError(f"{f} is missing or truncated; delete {self.path} and rerun extract")
        if verify and file_sha256(f) != m["sha256"]:
            raise StoreError(f"{f} fails its checksum; delete {self.path} and rerun extract")
        arr = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        if list(arr.shape) != m["shape"]:
            raise StoreError(f"{f} has shape {arr.shape}, manifest says {m['shape']}; delete {self.path} and rerun extract")
        valid = np.ones(m["n"], dtype=bool)
        for s in m.get("skipped", []):
            valid[s["index"]] = False
        return Features(array=arr, ids=m["sample_ids"], valid=valid, manifest=m)


class FeatureStore:
    """A folder of :class:`StoreEntry` s (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def entry(self, fields: dict[str, Any]) -> StoreEntry:
        """The entry for these key fields (it may not exist yet)."""
        key = key_of(fields)
        name = f"{fields['backbone']}-{fields['layer']}-{key[:12]}"
        return StoreEntry(self.root / _safe(fields["dataset"]) / _safe(fields["split"]) / name, key, fields)

    def manifests(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every entry's (folder, manifest), complete or partial."""
        out = []
        if not self.root.is_dir():
            return out
        for mp in sorted(self.root.glob("*/*/*/manifest.json")):
            try:
                out.append((mp.parent, json.loads(mp.read_text())))
            except (OSError, json.JSONDecodeError):
                out.append((mp.parent, {"status": "unreadable", "key": "?"}))
        return out

    def find(self, key_prefix: str) -> StoreEntry:
        """The one entry whose key starts with ``key_prefix`` (at least 6 characters)."""
        if len(key_prefix) < 6:
            raise StoreError("give at least 6 characters of the key (see `cnnbase features list`)")
        hits = [(p, m) for p, m in self.manifests() if str(m.get("key", "")).startswith(key_prefix)]
        if not hits:
            raise StoreError(f"no entry with key {key_prefix}… in {self.root}; see `cnnbase features list`")
        if len(hits) > 1:
            raise StoreError(f"key prefix {key_prefix} is ambiguous ({len(hits)} entries); give more characters")
        p, m = hits[0]
        return StoreEntry(p, m["key"], m["fields"])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in str(name)) or "_"
