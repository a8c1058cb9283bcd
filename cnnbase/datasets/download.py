"""Fetch a benchmark from its official location: resumable HTTP(S), checksums, safe unpacking.

``datasets.yaml`` describes each dataset's files::

    download:
      files:
        - url: http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar
          md5: c52e279531787c972589f7e41ab4ae64     # and/or sha256: ...
          strip_components: 1                       # drop leading folders of every member (as tar does)
          dest: .                                   # where under the root (default: the root itself)
          filename: ...                             # when the URL's last segment is not the file name
      instructions: where to get it by hand and where to put it

How a file is fetched (:func:`fetch`):

* into ``<name>.part`` next to the final file; an interrupted transfer (cut connection, Ctrl-C, crash) leaves
  the ``.part``, and the next attempt asks for the rest with an HTTP ``Range`` request (a server that answers
  200 instead of 206 is read again from the start). A dropped connection is retried automatically
  (``retries``), each retry resuming where the last stopped;
* when complete, its sha256 / md5 are compared with the pinned ones: a mismatch deletes the ``.part`` and
  raises :class:`DownloadError`; the bad file never takes the final name. With no checksum pinned the file is
  kept and its sha256 is reported so that it can be pinned;
* archives (``.tar``, ``.tgz``, ``.tar.gz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) are downloaded to
  ``<root>/downloads/`` and unpacked by :func:`unpack`, which refuses members with absolute paths, ``..``, or
  links leading outside the target folder, and never writes through an existing link that leads outside; a
  marker file records a finished unpack so that a rerun skips it. Other files go straight to ``<root>/<dest>/``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from ..config import DatasetConfig
from ..errors import ConfigError, DatasetError

ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
USER_AGENT = "cnnbase-datasets/0.1 (python urllib)"


class DownloadError(DatasetError):
    """A download that failed, was cut off too often, or did not match its checksum."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset's ``download.files`` list."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    dest: str = "."
    strip_components: int = 0

    @property
    def is_archive(self) -> bool:
        """Whether the file is unpacked after download."""
        return is_archive(self.filename)


@dataclass
class Fetched:
    """What happened to one file."""

    spec: FileSpec
    path: Path
    sha256: str
    pinned: bool
    skipped: bool
    unpacked_into: Path | None = None


def is_archive(name: str) -> bool:
    """Whether ``name`` looks like an archive :func:`unpack` can open."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def file_specs(cfg: DatasetConfig) -> list[FileSpec]:
    """The validated ``download.files`` of ``cfg`` (empty when only instructions are given)."""
    out = []
    for k, raw in enumerate(cfg.download.get("files") or []):
        where = f"datasets.yaml: {cfg.name}.download.files[{k}]"
        if not isinstance(raw, Mapping) or not raw.get("url"):
            raise ConfigError(f"{where} needs a 'url'")
        unknown = set(raw) - {"url", "filename", "sha256", "md5", "dest", "strip_components"}
        if unknown:
            raise ConfigError(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
        url = str(raw["url"])
        if urlparse(url).scheme not in ("http", "https"):
            raise ConfigError(f"{where}: only http(s) URLs can be fetched, not {url!r}; download it by hand")
        name = raw.get("filename") or unquote(PurePosixPath(urlparse(url).path).name)
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"{where}: cannot tell the file name from {url!r}; add 'filename:'")
        dest = str(raw.get("dest") or ".")
        if Path(dest).is_absolute() or ".." in PurePosixPath(dest).parts:
            raise ConfigError(f"{where}: dest {dest!r} must be a folder inside the dataset root")
        for key, n in (("sha256", 64), ("md5", 32)):
            v = raw.get(key)
            if v is not None and not re.fullmatch(rf"[0-9a-fA-F]{{{n}}}", str(v)):
                raise ConfigError(f"{where}: {key} must be {n} hex digits, not {v!r}")
        out.append(
            FileSpec(
                url=url,
                filename=name,
                sha256=str(raw["sha256"]).lower() if raw.get("sha256") else None,
                md5=str(raw["md5"]).lower() if raw.get("md5") else None,
                dest=dest,
                strip_components=int(raw.get("strip_components") or 0),
            )
        )
    return out


def file_digests(path: Path, chunk_size: int = 1 << 20) -> tuple[str, str]:
    """``(sha256, md5)`` hex digests of ``path``."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _check(path: Path, sha256: str | None, md5: str | None) -> tuple[bool, str, str]:
    got_sha, got_md5 = file_digests(path)
    ok = (sha256 is None or got_sha == sha256.lower()) and (md5 is None or got_md5 == md5.lower())
    return ok, got_sha, got_md5


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: Any = None,
    chunk_size: int = 1 << 16,
) -> tuple[Path, str, bool]:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, and return ``(dest, sha256, skipped)``.

    ``skipped`` is True when ``dest`` was already there and matched its checksum. ``progress`` is a
    ``rich.progress.Progress`` (or None). Raises :class:`DownloadError` on HTTP errors, after ``retries``
    broken connections (the ``.part`` is kept: rerun to resume), and on a checksum mismatch (the ``.part``
    is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        ok, got, _ = _check(dest, sha256, md5)
        if ok:
            return dest, got, True
        dest.unlink()  # a stale or corrupt final file: never keep it under the final name
    part = dest.with_name(dest.name + ".part")
    task = progress.add_task(dest.name, total=None) if progress is not None else None
    attempt = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        total: int | None = None
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                status = getattr(resp, "status", 200)
                length = resp.headers.get("Content-Length")
                if offset and status == 206 and _content_range_start(resp.headers.get("Content-Range")) == offset:
                    mode = "ab"
                else:
                    offset, mode = 0, "wb"  # the server ignored the Range: start again
                total = offset + int(length) if length and length.isdigit() else None
                if task is not None:
                    progress.update(task, total=total, completed=offset)
                with open(part, mode) as out:
                    while chunk := resp.read(chunk_size):
                        out.write(chunk)
                        if task is not None:
                            progress.advance(task, len(chunk))
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                pass  # nothing left to send: the .part is complete (the checksum below decides)
            else:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL in datasets.yaml or download by hand") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.is_file() else 0
                reason = getattr(exc, "reason", exc)
                raise DownloadError(
                    f"{url}: connection failed {attempt} times ({reason}); {have} bytes kept in {part}, rerun the same command to resume"
                ) from None
            time.sleep(backoff * attempt)
            continue
        size = part.stat().st_size if part.is_file() else 0
        if total is not None and size < total:
            attempt += 1  # the server closed the connection early: resume
            if attempt > retries:
                raise DownloadError(f"{url}: transfer cut off {attempt} times at {size} of {total} bytes; rerun the same command to resume")
            time.sleep(backoff * attempt)
            continue
        break
    ok, got_sha, got_md5 = _check(part, sha256, md5)
    if not ok:
        part.unlink()
        want = f"sha256 {sha256}" if sha256 and got_sha != sha256 else f"md5 {md5}"
        have = f"sha256 {got_sha}" if sha256 and got_sha != sha256 else f"md5 {got_md5}"
        raise DownloadError(
            f"{url}: checksum mismatch ({have}, expected {want}); the bad file was deleted: retry, and if it "
            "persists the publisher changed the file (fix the checksum in datasets.yaml)"
        )
    part.replace(dest)
    return dest, got_sha, False


# --------------------------------------------------------------------------------------------------- unpack


def _member_parts(name: str, archive: Path, strip: int) -> tuple[str, ...] | None:
    posix = name.replace("\\", "/")
    p = PurePosixPath(posix)
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in p.parts:
        raise DownloadError(f"{archive}: member {name!r} would be written outside the target folder; refusing to unpack this archive")
    parts = tuple(x for x in p.parts if x not in ("", "."))
    parts = parts[strip:]
    return parts or None


def _inside(target: Path, path: Path, archive: Path, name: str) -> Path:
    real_target = target.resolve()
    try:
        path.resolve().relative_to(real_target)
    except ValueError:
        raise DownloadError(f"{archive}: member {name!r} would be written outside {target} (through a link); refusing to unpack") from None
    return path


def unpack(archive: Path, target: Path, *, strip_components: int = 0) -> int:
    """Extract ``archive`` (tar of any compression, or zip) into ``target``; returns the number of files written.

    Members with absolute paths or ``..``, links pointing outside ``target``, device files, and writes through
    existing links leading outside are refused with :class:`DownloadError` (nothing is trusted to tarfile's
    or zipfile's own path handling: every file is written by this function).
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = 0
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = _member_parts(info.filename, archive, strip_components)
                if parts is None:
                    continue
                out = target.joinpath(*parts)
                _inside(target, out.parent, archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DownloadError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to unpack")
                if info.is_dir():
                    _inside(target, out, archive, info.filename)
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                if out.is_symlink():
                    out.unlink()
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                written += 1
        return written
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable tar or zip archive ({exc}); delete it and download again") from None
    with tf:
        for m in tf:
            parts = _member_parts(m.name, archive, strip_components)
            if parts is None:
                continue
            out = target.joinpath(*parts)
            _inside(target, out.parent, archive, m.name)
            if m.isdir():
                _inside(target, out, archive, m.name)
                out.mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                out.parent.mkdir(parents=True, exist_ok=True)
                if out.is_symlink():
                    out.unlink()
                src = tf.extractfile(m)
                assert src is not None
                with src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                written += 1
            elif m.issym():
                link = PurePosixPath(m.linkname)
                if link.is_absolute() or not _lexically_inside(PurePosixPath(*parts).parent / link):
                    raise DownloadError(f"{archive}: member {m.name!r} is a link to {m.linkname!r}, outside the target folder; refusing to unpack")
                out.parent.mkdir(parents=True, exist_ok=True)
                if out.exists() or out.is_symlink():
                    out.unlink()
                os.symlink(m.linkname, out)
            elif m.islnk():
                lparts = _member_parts(m.linkname, archive, strip_components)
                src_path = target.joinpath(*lparts) if lparts else None
                if src_path is None or not src_path.is_file():
                    raise DownloadError(f"{archive}: member {m.name!r} is a hard link to {m.linkname!r}, which is not in the archive before it; refusing to unpack")
                _inside(target, src_path, archive, m.name)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src_path, out)
                written += 1
            else:
                raise DownloadError(f"{archive}: member {m.name!r} is a device or fifo; refusing to unpack")
    return written


def _lexically_inside(p: PurePosixPath) -> bool:
    depth = 0
    for part in p.parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


# ------------------------------------------------------------------------------------------------- datasets


def download_dataset(
    cfg: DatasetConfig,
    root: Path | None = None,
    *,
    progress: Any = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> list[Fetched]:
    """Fetch and unpack every file of ``cfg.download.files`` under ``root`` (default: the entry's root).

    Raises :class:`DownloadError` (or ConfigError for a bad entry); datasets without files raise a
    DatasetError carrying the manual instructions.
    """
    root = Path(root) if root else cfg.root
    specs = file_specs(cfg)
    if not specs:
        raise DatasetError(f"{cfg.name} has no official download location; {manual_instructions(cfg, root)}")
    results = []
    for spec in specs:
        dest_dir = root / spec.dest
        where = root / "downloads" if spec.is_archive else dest_dir
        path, sha, skipped = fetch(
            spec.url, where / spec.filename, sha256=spec.sha256, md5=spec.md5, retries=retries, timeout=timeout, backoff=backoff, progress=progress
        )
        unpacked = None
        if spec.is_archive:
            marker = dest_dir / f".cnnbase-unpacked-{spec.filename}"
            if not (marker.is_file() and marker.read_text().strip() == sha):
                unpack(path, dest_dir, strip_components=spec.strip_components)
                marker.write_text(sha + "\n")
            unpacked = dest_dir
        results.append(Fetched(spec, path, sha, pinned=bool(spec.sha256 or spec.md5), skipped=skipped, unpacked_into=unpacked))
    return results


def manual_instructions(cfg: DatasetConfig, root: Path | None = None) -> str:
    """The entry's instructions with ``ROOT`` replaced by the actual folder."""
    root = Path(root) if root else cfg.root
    text = str(cfg.download.get("instructions") or "download it by hand and put it under ROOT")
    return " ".join(text.replace("ROOT", str(root)).split())


def progress_bar(console: Any = None) -> Any:
    """A Rich progress bar for byte transfers (file, bar, bytes, speed, ETA)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


__all__: Sequence[str] = [
    "DownloadError",
    "FileSpec",
    "Fetched",
    "download_dataset",
    "fetch",
    "file_digests",
    "file_specs",
    "manual_instructions",
    "progress_bar",
    "unpack",
]
