"""``records.jsonl``: append-only, one JSON object per evaluation, written under a lock and fsynced.

A record holds everything needed to interpret its number without the run that made it: time, dataset and
split, backbone, weights identity, layer and graph node, feature-store keys, preprocessing, jitter, precision,
head settings (C chosen per class), metric, value, per-class or per-query values, sample counts (including
skipped bad images), the protocol card and its deviations, and package versions.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import CnnbaseError

DEFAULT_RESULTS = Path("results") / "records.jsonl"


def versions() -> dict[str, str]:
    """Versions of what changes the numbers.

    Read from package metadata where the module is not loaded yet: importing scikit-learn only to learn its
    version costs seconds, and every feature-store manifest records these.
    """
    import sys

    import numpy
    import torch
    import torchvision

    from .. import __version__

    return {
        "cnnbase": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "sklearn": _version_of("sklearn", "scikit-learn") if "sklearn" not in sys.modules else sys.modules["sklearn"].__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _version_of(module: str, dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        import importlib

        return str(getattr(importlib.import_module(module), "__version__", "unknown"))


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with id, time and versions filled in."""
    return {
        "run_id": uuid.uuid4().hex[:12],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
        "versions": versions(),
    }


def append_record(record: dict[str, Any], path: str | os.PathLike[str] | None = None) -> Path:
    """Append ``record`` as one line; concurrent writers are serialised by a lock, the line is fsynced.

    The line goes out in one ``write`` on an ``O_APPEND`` descriptor while holding an exclusive ``flock``, so
    concurrent appenders (processes or threads) never interleave. If a crash left the file ending in a partial
    line, a newline is written first: the damaged line stays on its own (``read_records`` names it) instead of
    swallowing this record.
    """
    p = Path(path) if path else DEFAULT_RESULTS
    line = (json.dumps(record, sort_keys=False, default=_jsonable) + "\n").encode("utf-8")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CnnbaseError(f"cannot open results file {p}: {exc.strerror or exc}; pass --results FILE in a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # isolate a partial line left by a crash
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        what = "disk full" if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) else exc.strerror or str(exc)
        raise CnnbaseError(f"cannot append to results file {p} ({what}); the record of this run was not saved, fix and rerun") from None
    finally:
        os.close(fd)  # closing releases the lock
    return p


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def read_records(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """All records of ``path``; an unparsable line (a crash mid-write) is an error naming the line."""
    p = Path(path) if path else DEFAULT_RESULTS
    if not p.is_file():
        raise CnnbaseError(f"no results file {p}; run `cnnbase evaluate ...` first or pass --results FILE")
    out = []
    for n, raw in enumerate(p.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            rec = None
        if not isinstance(rec, dict):
            raise CnnbaseError(
                f"{p}:{n}: not a JSON record (a run that crashed while writing?); remove or repair that line"
            ) from None
        out.append(rec)
    return out
