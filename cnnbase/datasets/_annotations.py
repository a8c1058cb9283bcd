"""Reading official annotation files the way they are actually published (machinery shared by the adapters).

Every reader goes through these helpers so that the quirks found in the real files are handled once:

* CRLF or LF line endings, a missing newline after the last line, a UTF-8 byte-order mark, blank lines;
* fields split on any run of whitespace (VOC pads labels: ``000012  1``), except where names contain spaces
  (MIT-67 paths, attribute names), which the caller reads whole;
* every error is a :class:`~cnnbase.errors.DatasetError` of one line naming the file and line, what is wrong and
  how to fix it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def missing_file(path: Path, what: str, name: str | None = None) -> DatasetError:
    """The error for an annotation file that is not there."""
    hint = f"run `cnnbase datasets download {name}` or " if name else ""
    return DatasetError(f"{path}: file not found ({what}); {hint}point --root (or the datasets.yaml root) at the folder holding it")


def bad_line(path: Path | str, lineno: int | None, problem: str, fix: str = "fix or remove that line") -> DatasetError:
    """The error for a malformed or inconsistent annotation line."""
    where = f"{path}:{lineno}" if lineno is not None else f"{path}"
    return DatasetError(f"{where}: {problem}; {fix}")


def read_text(path: Path, what: str, name: str | None = None) -> str:
    """The whole file as text (UTF-8, BOM dropped; Latin-1 as a fallback for old files)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise missing_file(path, what, name) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc}); check its permissions") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def lines(path: Path, what: str, name: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, stripped text)`` for each non-blank line; CRLF, CR and a missing final newline are fine."""
    for n, line in enumerate(read_text(path, what, name).splitlines(), 1):
        text = line.strip()
        if text:
            yield n, text


def fields(path: Path, what: str, count: int | None = None, name: str | None = None, *, at_least: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """Whitespace-separated fields of each non-blank line, checking their number."""
    for n, text in lines(path, what, name):
        parts = text.split()
        if count is not None and len(parts) != count:
            raise bad_line(path, n, f"expected {count} fields ({what}), found {len(parts)} in {text[:80]!r}")
        if at_least is not None and len(parts) < at_least:
            raise bad_line(path, n, f"expected at least {at_least} fields ({what}), found {len(parts)} in {text[:80]!r}")
        yield n, parts


def to_int(token: str, path: Path, lineno: int | None, field: str) -> int:
    """``int(token)`` or a DatasetError naming the field, file and line."""
    try:
        return int(token)
    except ValueError:
        raise bad_line(path, lineno, f"{field} {token!r} is not an integer") from None


def to_float(token: str, path: Path, lineno: int | None, field: str, *, allow_nan: bool = False) -> float:
    """``float(token)`` or a DatasetError; NaN and infinities are refused unless ``allow_nan``."""
    try:
        value = float(token)
    except ValueError:
        raise bad_line(path, lineno, f"{field} {token!r} is not a number") from None
    if not allow_nan and not math.isfinite(value):
        raise bad_line(path, lineno, f"{field} is {token!r}")
    return value


def first_existing(candidates: Iterable[Path], test=Path.exists) -> Path | None:  # type: ignore[no-untyped-def]
    """The first candidate passing ``test`` (default: it exists)."""
    for c in candidates:
        if test(c):
            return c
    return None


def index_images(folder: Path, suffixes: tuple[str, ...] = (".jpg", ".jpeg")) -> dict[str, Path]:
    """``{file stem: path}`` for the images anywhere under ``folder`` (nested layouts such as Paris's)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(suffixes) and not f.startswith("._"):
                found.setdefault(os.path.splitext(f)[0], Path(dirpath) / f)
    return found


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` read from the image header only (no decoding); None when the file is absent."""
    if not path.is_file():
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None


def scale_box(
    box: tuple[float, float, float, float], scale: float, size: tuple[int, int] | None
) -> tuple[float, float, float, float]:
    """Grow ``box`` (x0, y0, x1, y1) about its centre so each side is ``scale`` times longer, then clip to
    ``size`` = (width, height) when known."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
    out = [cx - hw, cy - hh, cx + hw, cy + hh]
    if size is not None:
        w, h = size
        out = [min(max(out[0], 0.0), w), min(max(out[1], 0.0), h), min(max(out[2], 0.0), w), min(max(out[3], 0.0), h)]
    return (float(out[0]), float(out[1]), float(out[2]), float(out[3]))


_NUMBERED = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


def numbered_name(name: str) -> int | None:
    """``123456`` for ``"123456.jpg"``; None when the name is not a plain number."""
    m = _NUMBERED.match(name)
    return int(m.group(1)) if m else None

