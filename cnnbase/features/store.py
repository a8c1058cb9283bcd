"""The content-addressed, sharded, resumable feature store.

Layout::

    <root>/<dataset>/<split>/<backbone>-<layer>-<key12>/
        manifest.json        the key's fields, ordered sample ids, shape, dtype, status, skipped samples, versions
        features.npy         (n, d) or (n, views, d) raw activations, memory-mappable; present once complete
        shards/00000.npy     while extracting: one file per block of samples, renamed into place when whole
        shards/00000.json    that shard's sha256, shape and skipped samples, written after it; checked before use
        .lock                held (flock) by the process extracting this entry

Every file is written to a hidden ``.<name>.<pid>.tmp`` file, fsynced and renamed into place, so a reader (or a
process killed at any instant) sees the old file or the whole new one, never a part. Temporary files left by a
killed writer are ignored by readers and removed by the next writer of the entry (under its lock).

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


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _is_tmp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_error(path: Path, exc: OSError) -> StoreError:
    """The one-line error for a failed write of ``path`` (disk full, quota, permissions, ...)."""
    if exc.errno in _DISK_FULL:
        return StoreError(
            f"disk full while writing {path} ({exc.strerror or exc}); free space and rerun the same command "
            "(finished shards are kept, nothing partial was left)"
        )
    return StoreError(f"cannot write {path}: {exc.strerror or exc}; check that the folder exists and is writable")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    On any failure (disk full, an interrupt) the temporary file is removed and ``path`` is left as it was; an
    ``OSError`` becomes a one-line :class:`StoreError` (``"disk full while writing ..."`` for ENOSPC/EDQUOT).
    """
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # an interrupt (SIGINT) mid-write must not leave the temporary file either
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
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
        except (FileNotFoundError, NotADirectoryError):  # no entry yet (a file in the store's way fails when writing)
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"unreadable manifest {self.manifest_path} ({exc}); delete the folder to recompute") from None
        if not isinstance(m, dict):
            raise StoreError(f"unreadable manifest {self.manifest_path} (not a JSON object); delete the folder to recompute")
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
        try:
            (self.path / "shards").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.path / "shards", exc) from None
        self.remove_stale_tmp()
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

    def remove_stale_tmp(self) -> list[Path]:
        """Delete temporary files left by a killed writer (call only while holding :meth:`lock`)."""
        gone = []
        for folder in (self.path, self.path / "shards"):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if _is_tmp(p) and p.is_file():
                    with contextlib.suppress(OSError):
                        p.unlink()
                        gone.append(p)
        return gone

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

    def shard_meta(self, i: int) -> dict[str, Any] | None:
        """Shard ``i``'s checksum file, or None when it is missing or unreadable (the shard is then recomputed)."""
        try:
            meta = json.loads(self.shard_path(i).with_suffix(".json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        ok = (
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("shape"), list)
            and len(meta["shape"]) >= 1
            and isinstance(meta.get("skipped"), list)
        )
        return meta if ok else None

    def shard_ok(self, i: int, expected_rows: int) -> bool:
        """True when shard ``i`` exists, has its checksum file, the right row count and checksum."""
        p, meta = self.shard_path(i), self.shard_meta(i)
        if meta is None or meta["shape"][0] != expected_rows:
            return False
        try:
            return file_sha256(p) == meta["sha256"]
        except OSError:
            return False

    def finalize(self, n_shards: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Concatenate the shards into ``features.npy`` (atomically), mark complete, remove the shards."""
        import io

        m = self.manifest()
        if m is None:
            raise StoreError(f"{self.manifest_path} disappeared during extraction; rerun the same command")
        arrays, skipped = [], []
        for i in range(n_shards):
            meta = self.shard_meta(i)
            try:
                data = self.shard_path(i).read_bytes()
            except OSError:
                data = None
            if meta is None or data is None or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise StoreError(f"shard {self.shard_path(i)} is missing or changed on disk (checksum mismatch); rerun to recompute it")
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if list(arr.shape) != meta["shape"]:
                raise StoreError(f"shard {self.shard_path(i)} has shape {arr.shape}, its checksum file says {meta['shape']}; rerun to recompute it")
            arrays.append(arr)
            skipped.extend(meta["skipped"])
        rows = sum(len(a) for a in arrays)
        if "n" in m and rows != m["n"]:
            raise StoreError(f"{self.path}: shards hold {rows} rows for {m['n']} samples; delete the folder and rerun extract")
        full = np.concatenate(arrays) if arrays else np.zeros((0,), np.float32)
        digest = atomic_save_npy(self.path / "features.npy", full)
        m.update(extra)
        m.update(
            status="complete",
            shape=list(full.shape),
            dtype=str(full.dtype),
            sha256=digest,
            skipped=skipped,
            bytes=(st := (self.path / "features.npy").stat()).st_size,
            mtime_ns=st.st_mtime_ns,  # a later change re-checks the checksum
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        self.write_manifest(m)
        shutil.rmtree(self.path / "shards", ignore_errors=True)
        return m

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this entry's lock; a second writer of the same key waits here, then finds the work done."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / ".lock", "a+")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise write_error(self.path / ".lock", exc) from None
        with f:
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
    def load(self, *, mmap: bool = True, verify: bool | None = None) -> Features:
        """The complete entry's features; a size or checksum mismatch is an error.

        The checksum is computed when ``verify`` is True, or (None, the default) when ``features.npy`` was modified
        since it was last checked (its mtime differs from the manifest's): a same-size overwrite is caught, an
        untouched file costs no hashing. A passing check records the new mtime (where the store is writable)."""
        m = self.manifest()
        if not m or m.get("status") != "complete":
            raise StoreError(f"{self.path}: extraction not finished; rerun `cnnbase extract` with the same options")
        f = self.path / "features.npy"
        st = f.stat() if f.is_file() else None
        size = st.st_size if st else None
        if size != m.get("bytes"):
            what = "missing" if size is None else f"truncated or the wrong size ({size} bytes, the manifest says {m.get('bytes')})"
            raise StoreError(f"{f} is {what}; delete {self.path} and rerun extract")
        mtime = st.st_mtime_ns  # type: ignore[union-attr]  (the size check above needs the file)
        if verify or (verify is None and mtime != m.get("mtime_ns")):
            if file_sha256(f) != m.get("sha256"):
                raise StoreError(f"{f} fails its checksum (changed on disk); delete {self.path} and rerun extract")
            if mtime != m.get("mtime_ns"):
                with contextlib.suppress(StoreError):  # a read-only store checks again next time
                    self.write_manifest({**m, "mtime_ns": mtime})
        try:
            arr = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"{f} is corrupted ({why}); delete {self.path} and rerun extract") from None
        if list(arr.shape) != m.get("shape"):
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
                m = json.loads(mp.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                m = None
            out.append((mp.parent, m if isinstance(m, dict) else {"status": "unreadable", "key": "?"}))
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
