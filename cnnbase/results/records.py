"""``records.jsonl``: append-only, one JSON object per evaluation, written under a lock and fsynced.

A record holds everything needed to interpret its number without the run that made it: time, dataset and
split, backbone, weights identity, layer and graph node, feature-store keys, preprocessing, jitter, precision,
head settings (C chosen per class), metric, value, per-class or per-query values, sample counts (including
skipped bad images), the protocol card and its deviations, and package versions.
"""

from __future__ import annotations

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
    """Versions of what changes the numbers."""
    import numpy
    import sklearn
    import torch
    import torchvision

    from .. import __version__

    return {
        "cnnbase": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with id, time and versions filled in."""
    return {
        "run_id": uuid.uuid4().hex[:12],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
        "versions": versions(),
    }


def append_record(record: dict[str, Any], path: str | os.PathLike[str] | None = None) -> Path:
    """Append ``record`` as one line; concurrent writers are serialised by a lock, the line is fsynced."""
    p = Path(path) if path else DEFAULT_RESULTS
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=False, default=_jsonable) + "\n"
    with open(p, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
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
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise CnnbaseError(f"{p}:{n}: not a JSON record; remove or repair that line") from None
    return out
