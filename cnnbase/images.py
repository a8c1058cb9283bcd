"""How cnnbase reads an image: one policy, applied everywhere a pixel is read.

Every image cnnbase reads (feature extraction, training and test alike, dataset scans) goes through
:func:`load_rgb`, which returns a fully decoded 8-bit RGB :class:`PIL.Image.Image`, or raises
:class:`~cnnbase.errors.BadImageError` with a short reason. Nothing is ever silently filled in or guessed.

**What is read.** The file's *content* decides the format, not its extension (a PNG named ``x.jpg`` loads).
Accepted formats: JPEG (baseline, progressive, MPO camera JPEGs), PNG (incl. APNG), GIF, BMP, TIFF, WebP
and PPM/PGM/PBM. Other content (EPS, PSD, HEIC, ...) is reported, and no external program (Ghostscript) is
ever started. Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF) give their *first* frame. Paths may
be ``str`` or :class:`os.PathLike`, with spaces and non-ASCII characters. Folder scanning uses
:data:`IMAGE_EXTENSIONS` through :func:`is_image_file` (case-insensitive, so ``IMG_01.JPG`` counts); macOS
``._*`` AppleDouble files are not images and are skipped.

**Conversion to RGB** (each rule is the same for every file, never chosen from the file's content
statistics, except for float images, see below):

- RGB: used as decoded, no copy. 1-bit, L (grey) and palette images: the standard Pillow conversion
  (grey is replicated in R, G and B; 1-bit gives 0 or 255).
- Transparency (RGBA, LA, PA, palette with a transparent index or alpha table, RGB/L with a PNG ``tRNS``
  colour): alpha-composited on **white** (:data:`BACKGROUND`), ``out = a*pixel + (1-a)*255``. Why white:
  transparent images in benchmark data are mostly cut-out product/object shots, logos and clip art made to
  be shown on a white page, which is also how annotators saw them (browsers, viewers) and how such objects
  appear in ImageNet-style training photos (studio shots on white). Black, which is what dropping the alpha
  channel usually gives (Pillow's ``convert("RGB")`` keeps the undefined colour of transparent pixels, often
  0), makes dark line art vanish; mid-grey is an arbitrary, out-of-distribution backdrop.
- 16-bit grey (``I;16*`` modes, and ``I`` -- Pillow's mode for 16-bit PGM and older 16-bit PNG reads):
  **scaled** to 8 bits by keeping the high byte, ``v8 = v16 >> 8`` (0 -> 0, 65535 -> 255), the rule Pillow
  itself applies to 16-bit colour PNG/TIFF. Pillow's own ``convert("L")`` *saturates* (every value above 255
  becomes 255, a white image); cnnbase never does that. No per-image contrast stretch: a 12-bit image stored
  in a 16-bit PNG/TIFF stays dark, as its file says (a PGM declares its maximum, which Pillow honours). 32-bit integer values outside [0, 65535] are reported. A
  ``tRNS`` transparent grey level in a 16-bit PNG is ignored (very rare).
- Float grey (``F``, e.g. float TIFF): read as [0, 1] if every value is within [0, 1] (the usual float image
  convention), else as [0, 255] (Pillow's convention); rounded to 8 bits. NaN/inf or values outside
  [0, 255] are reported.
- CMYK: if the file embeds an ICC profile, it is converted to sRGB through that profile (LittleCMS, the
  profile's default rendering intent), as colour-managed viewers do; if not (or if the profile cannot be
  used), with the standard formula ``R = (255 - C) * (255 - K) / 255`` etc. JPEG polarity: Photoshop writes
  CMYK JPEGs with an Adobe APP14 marker and *inverted* ink values; Pillow always decodes CMYK JPEGs as
  inverted. cnnbase keeps that when the Adobe marker is present (``info["adobe"]``) and undoes it when the
  marker is absent (only Adobe-convention writers invert, and they write the marker).
- CIELab (LAB TIFF): converted to sRGB with LittleCMS. YCbCr and other modes Pillow can convert: Pillow's
  conversion. Modes that cannot be converted are reported.
- ICC profiles of RGB and grey images are *ignored* (pixels are taken as sRGB), as by torchvision's loader
  and the reference pipelines; the networks were trained that way.

**EXIF orientation: ignored by default**, in training and in test alike; ``exif_transpose=True`` applies it
(:func:`PIL.ImageOps.exif_transpose`). Why: PIL's ``Image.open`` (hence torchvision's ``default_loader`` and
``ImageFolder``), Matlab's ``imread`` and the reference code of the published Razavian/Oquab-era protocols
all use the stored pixel grid, and annotations (boxes, part locations) made with such tools refer to that
grid; rotating would change the images the published numbers were measured on and misalign the annotations. Pass
``exif_transpose=True`` consistently (for every split) if a dataset was annotated upright.

**Crop box.** ``box=(x0, y0, x1, y1)`` uses Pillow's convention: 0-based pixel coordinates, ``x1``/``y1``
exclusive (convert VOC's 1-based inclusive boxes before). It is given in the full-resolution frame of the
image ``load_rgb`` would return without a box (i.e. after the EXIF rotation when ``exif_transpose=True``,
and before any ``draft_size`` reduction). Fractional coordinates are widened to whole pixels
(``floor(x0)``, ``ceil(x1)``), then **clipped** to the image (a box running past an edge is cut there, never
padded). A box with ``x1 <= x0`` or ``y1 <= y0``, or that does not overlap the image, raises
:class:`~cnnbase.errors.DatasetError` (an annotation problem, not an image problem).

**draft_size** (opt-in, off by default): ``draft_size=(w, h)`` lets libjpeg decode a JPEG at 1/2, 1/4 or
1/8 scale (DCT-domain) when the region read (the box if given, else the whole image) stays at least
``w`` x ``h``. Faster on large photos, but the pixels differ from a full decode followed by a resize
(features change by about 4%, see PERF.md), so it must be used for every split or none. No effect on other
formats or on images smaller than twice the target. The returned image is then smaller than the box.

**Reported, never repaired** -- :class:`~cnnbase.errors.BadImageError` ``(path, reason)``, reasons:

- ``"missing"``, ``"broken symlink"``, ``"is a directory"``, ``"not a regular file"``, ``"permission denied"``,
  ``"empty file"``, ``"cannot stat (...)"``, ``"unreadable (...)"``;
- ``"truncated"``: detected during the single decode (``load()``), never later: cnnbase refuses to run when
  ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is true (Pillow would then fill the missing pixels in);
- ``"not an image (looks like HTML)"`` (a saved error page), ``... (looks like text)``, ``(looks like SVG)``,
  ``(looks like XML)``, ``(looks like PDF)``, ``(looks like gzip)``, ``(looks like ZIP)``,
  ``(macOS '._' metadata file)``, ``(unknown format)``; ``"unsupported format (HEIC)"`` and the like;
  ``"corrupt header (JPEG)"`` when the magic number is right but the header cannot be parsed;
- ``"decompression bomb (N pixels > limit M)"``: Pillow's ``Image.MAX_IMAGE_PIXELS`` limit stays on, and
  both its error (over twice the limit) and its warning (over the limit) are errors here;
- ``"corrupt (...)"`` for any other decoder failure; ``"unsupported pixel mode X"``; ``"float pixels ..."``
  and ``"32-bit integer pixels ..."`` (out of range, see above); ``"corrupt EXIF (...)"`` (only when
  ``exif_transpose=True``); ``"too large to decode (out of memory)"``.

Each file is decoded once (no ``verify()`` pass): Pillow's ``load()`` raises ``OSError("image file is
truncated")`` for JPEG (including a missing end marker), PNG, GIF, TIFF and BMP when
``LOAD_TRUNCATED_IMAGES`` is false, and cnnbase turns that into the ``"truncated"`` reason; a cut WebP, or a
cut TIFF whose directory was written after the pixels, is recognised from the length or offset its header
declares. Limits: a PNG or GIF cut only after its last pixel row (missing ``IEND`` chunk or trailer byte)
loads, since no pixel is missing or invented; corruption *inside* a JPEG or lossy WebP stream that the
decoder tolerates (these formats carry no checksum) cannot be detected by any decoder-based check.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageFile, ImageOps, UnidentifiedImageError

from cnnbase.errors import BadImageError, ConfigError, DatasetError

__all__ = [
    "BACKGROUND",
    "IMAGE_EXTENSIONS",
    "check_image",
    "is_image_file",
    "load_rgb",
    "scan_images",
]

#: File extensions (lower case, with the dot) that folder scanning treats as images; matching is
#: case-insensitive. Content, not extension, decides how a file is decoded.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
    }
)

#: Colour transparent pixels are composited on (white; see the module docstring for why).
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

# Pillow plugins allowed to open a file (matches IMAGE_EXTENSIONS). Multi-picture camera JPEGs are opened
# by the JPEG plugin, which then reports format "MPO".
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")

_ORIENTATION_TAG = 0x0112
_SNIFF_BYTES = 1024


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """True if ``name``'s extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive).

    macOS AppleDouble files (``._photo.jpg``, left by archives made on a Mac) are not images: False.
    """
    base = os.path.basename(os.fspath(name))
    if base.startswith("._"):
        return False
    ext = os.path.splitext(base)[1].lower()
    return ext in IMAGE_EXTENSIONS


def load_rgb(
    path: str | os.PathLike[str],
    *,
    box: tuple[float, float, float, float] | None = None,
    exif_transpose: bool = False,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Read ``path`` as a fully decoded 8-bit RGB image, following the module's policy.

    Args:
        path: the image file.
        box: optional crop ``(x0, y0, x1, y1)``, 0-based, ``x1``/``y1`` exclusive, in the full-resolution
            frame of the returned image (after EXIF rotation if requested); widened to whole pixels and
            clipped to the image.
        exif_transpose: apply the EXIF orientation tag (default False: ignore it, see module docstring).
        draft_size: opt-in JPEG DCT-domain reduction: decode at 1/2, 1/4 or 1/8 scale while the region
            (box or image) stays at least ``(w, h)``. Changes pixels; use for all splits or none.

    Returns:
        A loaded ``RGB`` image (``load()`` already called; the file is closed).

    Raises:
        BadImageError: the file cannot be decoded faithfully (``.reason`` says why).
        DatasetError: ``box`` is empty, reversed or outside the image.
        ConfigError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` has been switched on in this process.
    """
    _refuse_truncated_loading()
    p = os.fspath(path)
    box_f = _validate_box(box, p)
    target = _validate_draft_size(draft_size)
    _check_file(p)

    try:
        im = Image.open(p, formats=_FORMATS)
    except BadImageError:
        raise
    except BaseException as e:  # noqa: BLE001 - mapped or re-raised below
        mapped = _open_error(p, e)
        if mapped is e:
            raise
        raise mapped from e

    try:
        with im:
            _check_bomb(p, im)
            fmt = im.format
            scale = 1
            if target is not None and fmt in ("JPEG", "MPO"):
                scale = _apply_draft(im, target, box_f, exif_transpose)
            im.load()
            if exif_transpose:
                im = _exif_transpose(p, im)
            if box_f is not None:
                im = _crop(p, im, box_f, scale)
            return _to_rgb(p, im, fmt)
    except (BadImageError, DatasetError, ConfigError):
        raise
    except BaseException as e:  # noqa: BLE001 - mapped or re-raised below
        mapped = _decode_error(p, e)
        if mapped is e:
            raise
        raise mapped from e


def check_image(
    path: str | os.PathLike[str],
    *,
    box: tuple[float, float, float, float] | None = None,
    exif_transpose: bool = False,
    draft_size: tuple[int, int] | None = None,
) -> str | None:
    """Decode ``path`` exactly as :func:`load_rgb` would; None if it is fine, else the reason (a str).

    Only :class:`BadImageError` is turned into a reason; a bad ``box`` or a ``ConfigError`` still raises.
    """
    try:
        load_rgb(path, box=box, exif_transpose=exif_transpose, draft_size=draft_size)
    except BadImageError as e:
        return e.reason
    return None


def scan_images(
    paths: Iterable[str | os.PathLike[str]],
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    exif_transpose: bool = False,
) -> list[tuple[str, str]]:
    """Fully decode every file and return ``[(path, reason), ...]`` for *all* bad ones, in input order.

    Args:
        paths: files to check.
        workers: decoding threads (Pillow releases the GIL while decoding); default: the number of cores
            this process may use. 1 decodes in the calling thread.
        progress: called as ``progress(done, total)`` after each file, from the calling thread.
        exif_transpose: scan with the same setting the extraction will use.
    """
    items = [os.fspath(p) for p in paths]
    total = len(items)
    bad: list[tuple[str, str] | None] = [None] * total
    n_workers = _default_workers() if workers is None else int(workers)
    n_workers = max(1, min(n_workers, total))

    def one(i: int) -> None:
        reason = check_image(items[i], exif_transpose=exif_transpose)
        if reason is not None:
            bad[i] = (items[i], reason)

    if n_workers == 1:
        for i in range(total):
            one(i)
            if progress is not None:
                progress(i + 1, total)
    else:
        window = 4 * n_workers  # bounded submission: a million paths do not make a million futures
        done_count = 0
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="cnnbase-scan") as pool:
            next_i = 0
            pending = set()
            while next_i < total or pending:
                while next_i < total and len(pending) < window:
                    pending.add(pool.submit(one, next_i))
                    next_i += 1
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    fut.result()  # re-raises anything that is not a BadImageError
                    done_count += 1
                    if progress is not None:
                        progress(done_count, total)
    return [b for b in bad if b is not None]


# --------------------------------------------------------------------------------------------------------
# file-level checks


def _refuse_truncated_loading() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ConfigError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process (set by your code or a library): "
            "truncated images would be silently filled in; set it back to False"
        )


def _check_file(p: str) -> None:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise BadImageError(p, "broken symlink" if os.path.islink(p) else "missing") from None
    except NotADirectoryError:
        raise BadImageError(p, "missing") from None
    except PermissionError:
        raise BadImageError(p, "permission denied") from None
    except OSError as e:  # ELOOP (symlink loop), ENAMETOOLONG, ...
        raise BadImageError(p, f"cannot stat ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadImageError(p, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise BadImageError(p, "not a regular file")  # a FIFO would block forever, a device is not a file
    if st.st_size == 0:
        raise BadImageError(p, "empty file")


def _check_bomb(p: str, im: Image.Image) -> None:
    # Pillow raises DecompressionBombError above 2x the limit but only *warns* between 1x and 2x; the
    # warning is turned into an error here without touching the process-wide warning filters.
    limit = Image.MAX_IMAGE_PIXELS
    w, h = im.size
    if limit is not None and w * h > limit:
        raise BadImageError(p, f"decompression bomb ({w * h} pixels > limit {int(limit)})")


_BOMB_RE = re.compile(r"\((\d+) pixels\).*?(\d+) pixels", re.S)


def _bomb_reason(e: BaseException) -> str:
    m = _BOMB_RE.search(str(e))
    if m:
        return f"decompression bomb ({m.group(1)} pixels > limit {m.group(2)})"
    return f"decompression bomb ({e})"


def _open_error(p: str, e: BaseException) -> BaseException:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return BadImageError(p, _bomb_reason(e))
    if isinstance(e, UnidentifiedImageError):
        return BadImageError(p, _sniff(p))
    return _decode_error(p, e)


def _decode_error(p: str, e: BaseException) -> BaseException:
    """Map an exception raised while opening/decoding to a BadImageError (or return it unchanged)."""
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return BadImageError(p, _bomb_reason(e))
    if isinstance(e, FileNotFoundError):  # deleted between stat and open
        return BadImageError(p, "missing")
    if isinstance(e, IsADirectoryError):
        return BadImageError(p, "is a directory")
    if isinstance(e, PermissionError):
        return BadImageError(p, "permission denied")
    if isinstance(e, MemoryError):
        return BadImageError(p, "too large to decode (out of memory)")
    if isinstance(e, UnidentifiedImageError):
        return BadImageError(p, _sniff(p))
    if isinstance(
        e,
        (
            OSError,
            SyntaxError,
            ValueError,
            EOFError,
            struct.error,
            IndexError,
            TypeError,
            KeyError,
            ZeroDivisionError,
        ),
    ):
        msg = str(e)
        if "truncated" in msg.lower() or _declares_more_than_it_has(p):
            return BadImageError(p, "truncated")
        if "broken data stream" in msg:
            return BadImageError(p, "corrupt (broken data stream)")
        msg = " ".join(msg.split())
        if len(msg) > 80:
            msg = msg[:77] + "..."
        return BadImageError(
            p, f"corrupt ({type(e).__name__}: {msg})" if msg else f"corrupt ({type(e).__name__})"
        )
    return e  # KeyboardInterrupt, SystemExit, bugs: not an image problem


def _declares_more_than_it_has(p: str) -> bool:
    """True if the file's own header points past its end (a cut file whose decoder gave a vague error).

    WebP (RIFF) stores its total length: libwebp only says "could not create decoder object" when cut.
    TIFF writers often put the first directory (IFD) after the pixel data: cut, the header is unreadable.
    """
    try:
        with open(p, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return struct.unpack("<I", head[4:8])[0] + 8 > size
    if len(head) >= 8 and head[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if head[:2] == b"II" else ">"
        return struct.unpack(order + "I", head[4:8])[0] + 2 > size
    if len(head) >= 16 and head[:4] in (b"II+\x00", b"MM\x00+"):  # BigTIFF
        order = "<" if head[:2] == b"II" else ">"
        return struct.unpack(order + "Q", head[8:16])[0] + 8 > size
    return False


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "corrupt header (JPEG)"),
    (b"\x89PNG\r\n\x1a\n", "corrupt header (PNG)"),
    (b"GIF87a", "corrupt header (GIF)"),
    (b"GIF89a", "corrupt header (GIF)"),
    (b"II*\x00", "corrupt header (TIFF)"),
    (b"MM\x00*", "corrupt header (TIFF)"),
    (b"BM", "corrupt header (BMP)"),
    (b"\x00\x05\x16\x07", "not an image (macOS '._' metadata file)"),
    (b"%PDF", "not an image (looks like PDF)"),
    (b"%!PS", "unsupported format (PostScript)"),
    (b"\xc5\xd0\xd3\xc6", "unsupported format (PostScript)"),
    (b"8BPS", "unsupported format (PSD)"),
    (b"\x1f\x8b", "not an image (looks like gzip)"),
    (b"PK\x03\x04", "not an image (looks like ZIP)"),
    (b"\x00\x00\x00\x0cjP  ", "unsupported format (JPEG 2000)"),
    (b"\xff\x4f\xff\x51", "unsupported format (JPEG 2000)"),
    (b"\x00\x00\x01\x00", "unsupported format (ICO)"),
)


def _sniff(p: str) -> str:
    """Say what a file Pillow could not identify looks like."""
    try:
        with open(p, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not head:
        return "empty file"
    if _declares_more_than_it_has(p):
        return "truncated"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "corrupt header (WebP)"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis"):
            return "unsupported format (HEIC)"
        if brand in (b"avif", b"avis"):
            return "unsupported format (AVIF)"
        return "not an image (looks like MP4/QuickTime)"
    for magic, reason in _MAGIC:
        if head.startswith(magic):
            return reason
    text = _as_text(head)
    if text is not None:
        low = text.lstrip().lower()
        if low.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in low:
            return "not an image (looks like HTML)"
        if "<svg" in low:
            return "not an image (looks like SVG)"
        if low.startswith("<?xml") or low.startswith("<"):
            return "not an image (looks like XML)"
        return "not an image (looks like text)"
    return "not an image (unknown format)"


def _as_text(head: bytes) -> str | None:
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            head = head[len(bom) :]
            try:
                return head.decode(enc, errors="ignore")
            except LookupError:  # pragma: no cover
                return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a multi-byte character cut at the end of the sample
            return None
        text = head[: e.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\t\n\r\f" for ch in text)
    return text if text and printable >= 0.95 * len(text) else None


# --------------------------------------------------------------------------------------------------------
# decoding helpers


def _validate_box(box: object, p: str) -> tuple[float, float, float, float] | None:
    if box is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in box)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DatasetError(f"crop box {box!r} for {p} is not 4 numbers (x0, y0, x1, y1)") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise DatasetError(f"crop box {box!r} for {p} has a non-finite coordinate")
    if x1 <= x0 or y1 <= y0:
        raise DatasetError(f"crop box {box!r} for {p} is empty or reversed (need x0 < x1 and y0 < y1)")
    return (x0, y0, x1, y1)


def _validate_draft_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        w, h = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"draft_size must be (width, height), got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"draft_size must be positive, got {size!r}")
    return (w, h)


def _pixel_box(box: tuple[float, float, float, float], scale: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (
        math.floor(x0 / scale),
        math.floor(y0 / scale),
        math.ceil(x1 / scale),
        math.ceil(y1 / scale),
    )


def _clip(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = size
    x0, y0, x1, y1 = box
    return (max(0, x0), max(0, y0), min(w, x1), min(h, y1))


def _apply_draft(
    im: Image.Image, target: tuple[int, int], box: tuple[float, float, float, float] | None, exif: bool
) -> int:
    """Ask libjpeg for a 1/2, 1/4 or 1/8 decode keeping the region >= target; return the scale used."""
    w, h = im.size
    swap = False
    if exif:
        try:
            swap = im.getexif().get(_ORIENTATION_TAG) in (5, 6, 7, 8)
        except Exception:  # noqa: BLE001 - a broken EXIF block is reported by _exif_transpose later
            swap = False
    final_size = (h, w) if swap else (w, h)
    if box is not None:
        x0, y0, x1, y1 = _clip(_pixel_box(box, 1), final_size)
        rw, rh = max(0, x1 - x0), max(0, y1 - y0)
    else:
        rw, rh = final_size
    tw, th = target
    if swap:  # region and target in the stored (unrotated) frame
        rw, rh, tw, th = rh, rw, th, tw
    ratio = min(rw // tw, rh // th)
    scale = next((s for s in (8, 4, 2) if ratio >= s), 1)
    if scale == 1:
        return 1
    res = im.draft(None, (max(1, w // scale), max(1, h // scale)))
    if res is None:
        return 1
    return max(1, round(w / res[1][2]))


def _exif_transpose(p: str, im: Image.Image) -> Image.Image:
    try:
        if im.getexif().get(_ORIENTATION_TAG, 1) not in (2, 3, 4, 5, 6, 7, 8):
            return im  # nothing to do (and no copy: exif_transpose would copy)
        out = ImageOps.exif_transpose(im)
    except Exception as e:  # noqa: BLE001 - malformed EXIF blocks raise many different things
        raise BadImageError(p, f"corrupt EXIF ({type(e).__name__})") from e
    return out if out is not None else im


def _crop(p: str, im: Image.Image, box: tuple[float, float, float, float], scale: int) -> Image.Image:
    pix = _clip(_pixel_box(box, scale), im.size)
    x0, y0, x1, y1 = pix
    if x1 <= x0 or y1 <= y0:
        w, h = im.size
        raise DatasetError(
            f"crop box {tuple(box)} does not overlap image {p} ({w * scale}x{h * scale} pixels)"
        )
    if pix == (0, 0, *im.size):
        return im
    return im.crop(pix)


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_rgb(p: str, im: Image.Image, fmt: str | None) -> Image.Image:
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _SIXTEEN_BIT or mode == "I":
        return _grey_array_to_rgb(_int_to_8bit(p, np.asarray(im), mode))
    if mode == "F":
        return _grey_array_to_rgb(_float_to_8bit(p, np.asarray(im)))
    if mode == "CMYK":
        return _cmyk_to_rgb(im, fmt)
    if mode == "LAB":
        return _lab_transform().apply(im)
    try:
        if im.has_transparency_data:
            rgba = im if im.mode == "RGBA" else im.convert("RGBA")
            out = Image.new("RGB", im.size, BACKGROUND)
            out.paste(rgba, mask=rgba)
            return out
        return im.convert("RGB")
    except ValueError as e:
        raise BadImageError(p, f"unsupported pixel mode {mode}") from e


def _grey_array_to_rgb(a8: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a8)).convert("RGB")  # 2-D uint8 -> "L"


def _int_to_8bit(p: str, a: np.ndarray, mode: str) -> np.ndarray:
    if mode == "I":  # 32-bit signed: Pillow's mode for 16-bit PGM (rescaled to 0..65535) and old 16-bit PNG
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise BadImageError(p, f"32-bit integer pixels outside [0, 65535] (range {lo}..{hi})")
    return (a >> 8).astype(np.uint8)


def _float_to_8bit(p: str, a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise BadImageError(p, "float pixels contain NaN or infinity")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 255.0:
        raise BadImageError(p, f"float pixels outside [0, 255] (range {lo:g}..{hi:g})")
    if hi <= 1.0:
        a = a * np.float32(255.0)
    return np.rint(a).astype(np.uint8)


def _cmyk_to_rgb(im: Image.Image, fmt: str | None) -> Image.Image:
    if fmt in ("JPEG", "MPO") and "adobe" not in im.info:
        # Pillow decodes every CMYK JPEG with Adobe's inverted polarity; without the marker it is plain.
        im = ImageChops.invert(im)
    icc = im.info.get("icc_profile")
    if icc:
        transform = _cmyk_transform(bytes(icc))
        if transform is not None:
            try:
                return transform.apply(im)
            except Exception:  # noqa: BLE001 - fall back to the formula below
                pass
    return im.convert("RGB")


_cms_lock = threading.Lock()


@lru_cache(maxsize=8)
def _cmyk_transform(icc: bytes):  # type: ignore[no-untyped-def]
    """CMYK -> sRGB LittleCMS transform for an embedded profile (cached: datasets reuse a few profiles)."""
    try:
        from PIL import ImageCms

        with _cms_lock:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if src.profile.xcolor_space.strip() != "CMYK":
                return None
            intent = ImageCms.getDefaultIntent(src)
            return ImageCms.buildTransform(src, _srgb_profile(), "CMYK", "RGB", renderingIntent=intent)
    except Exception:  # noqa: BLE001 - no LittleCMS, unreadable profile: use the formula
        return None


@lru_cache(maxsize=1)
def _srgb_profile():  # type: ignore[no-untyped-def]
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=1)
def _lab_transform():  # type: ignore[no-untyped-def]
    from PIL import ImageCms

    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), _srgb_profile(), "LAB", "RGB")


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
