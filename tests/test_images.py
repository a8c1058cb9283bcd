"""Tests for cnnbase.images: the image-reading policy, one generated file per case.

The table of cases (``CASES``) is the contract: each row names a file built under ``tmp_path`` and the
outcome ``load_rgb`` must give (decoded and checked, or refused with a given reason). ``case_table()``
renders it as Markdown for documentation.
"""

from __future__ import annotations

import io
import itertools
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from cnnbase.errors import BadImageError, ConfigError, DatasetError
from cnnbase.images import (
    BACKGROUND,
    IMAGE_EXTENSIONS,
    check_image,
    is_image_file,
    load_rgb,
    scan_images,
)

# --------------------------------------------------------------------------------------------------------
# file builders


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)


def _close(a, b, tol: int) -> bool:
    return bool(np.abs(np.asarray(a, dtype=np.int32) - np.asarray(b, dtype=np.int32)).max() <= tol)


def _pattern(w: int = 64, h: int = 48) -> Image.Image:
    """Four flat quadrants (red, green, blue, white): survives JPEG almost unchanged inside each block."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 255)
    return Image.fromarray(a)


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def _png_chunk(cid: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))


def _png_raw(
    path: Path, width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None
) -> Path:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr)
    if rows is not None:
        body += _png_chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b""))
    return path


def _strip_adobe_app14(data: bytes) -> bytes:
    i = data.index(b"\xff\xee")  # APP14 marker, then a 2-byte length, then "Adobe"
    assert data[i + 4 : i + 9] == b"Adobe"
    length = struct.unpack(">H", data[i + 2 : i + 4])[0]
    return data[:i] + data[i + 2 + length :]


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def make_cmyk_icc(corner_rgb: Callable[[int, int, int, int], tuple[int, int, int]]) -> bytes:
    """A tiny ICC v2 CMYK input profile (A2B0 lut8, 2-point grid) mapping ink corners to ``corner_rgb``."""
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    corners = list(itertools.product((0, 1), repeat=4))
    strip = Image.new("RGB", (len(corners), 1))
    strip.putdata([corner_rgb(*c) for c in corners])
    lab = to_lab.apply(strip)
    clut = b"".join(bytes(lab.getpixel((i, 0))) for i in range(len(corners)))  # L, a + 128, b + 128
    ident = bytes(range(256))
    a2b0 = (
        b"mft1"
        + b"\0" * 4
        + bytes([4, 3, 2, 0])
        + b"".join(_s15(1.0 if i == j else 0.0) for i in range(3) for j in range(3))
        + ident * 4
        + clut
        + ident * 3
    )
    text = b"cnnbase test CMYK\0"
    desc = (
        b"desc"
        + b"\0" * 4
        + struct.pack(">I", len(text))
        + text
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67
    )
    wtpt = b"XYZ " + b"\0" * 4 + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    cprt = b"text" + b"\0" * 4 + b"public domain\0"
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", a2b0)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", offset + len(data))
        + b"\0" * 4
        + struct.pack(">I", 0x02100000)
        + b"scnr"
        + b"CMYK"
        + b"Lab "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _cmyk_patches() -> Image.Image:
    """16x16 flat patches: no ink, full cyan, full magenta, full black, 50% cyan + 20% black."""
    inks = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 0, 255), (128, 0, 0, 51)]
    im = Image.new("CMYK", (16 * len(inks), 16))
    for i, ink in enumerate(inks):
        im.paste(ink, (16 * i, 0, 16 * (i + 1), 16))
    return im


def _naive_cmyk(ink: tuple[int, int, int, int]) -> tuple[int, ...]:
    c, m, y, k = ink
    return tuple(round((255 - v) * (255 - k) / 255) for v in (c, m, y))


def _patch_centres(im: Image.Image, n: int) -> list[tuple[int, ...]]:
    return [im.getpixel((16 * i + 8, 8)) for i in range(n)]


# --------------------------------------------------------------------------------------------------------
# the cases


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path]  # builds the file under tmp_path, returns the path to load
    expect: str  # "ok" or the exact BadImageError reason, or a prefix ending with "…"
    check: Callable[[Image.Image], None] | None = None  # extra assertions on a good image
    note: str = ""


def _save(name: str, im_fn: Callable[[], Image.Image], **kw) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        im_fn().save(p, **kw)
        return p

    return make


def _write(name: str, data_fn: Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(data_fn())
        return p

    return make


def _cut(name: str, data_fn: Callable[[], bytes], keep: Callable[[int], int]) -> Callable[[Path], Path]:
    def data() -> bytes:
        b = data_fn()
        return b[: keep(len(b))]

    return _write(name, data)


def _is_pattern(tol: int = 8) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        assert im.size == (64, 48)
        w, h = im.size
        assert _close(im.getpixel((8, 8)), (255, 0, 0), tol)
        assert _close(im.getpixel((w - 8, 8)), (0, 255, 0), tol)
        assert _close(im.getpixel((8, h - 8)), (0, 0, 255), tol)
        assert _close(im.getpixel((w - 8, h - 8)), (255, 255, 255), tol)

    return check


def _size(w: int, h: int) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        assert im.size == (w, h)

    return check


def _grey16() -> Image.Image:
    return Image.fromarray(np.array([[0, 255, 256, 1000, 32768, 40000, 65535]], dtype=np.uint16))


def _check_grey16(im: Image.Image) -> None:
    # v >> 8: scaled, not saturated (Pillow's convert("L") would give 0, 255, 255, 255, 255, 255, 255)
    assert _arr(im)[0, :, 0].tolist() == [0, 0, 1, 3, 128, 156, 255]
    assert (_arr(im)[..., 0] == _arr(im)[..., 1]).all() and (_arr(im)[..., 0] == _arr(im)[..., 2]).all()


def _pgm16(d: Path) -> Path:
    p = d / "depth16.pgm"
    p.write_bytes(b"P5 7 1 65535\n" + np.array([[0, 255, 256, 1000, 32768, 40000, 65535]], ">u2").tobytes())
    return p


def _png16_rgb(d: Path) -> Path:
    a = np.array([[[65535, 32768, 255], [256, 1000, 40000]]], dtype=np.uint16)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in a)
    return _png_raw(d / "rgb16.png", 2, 1, 16, 2, rows)


def _check_png16_rgb(im: Image.Image) -> None:
    assert _arr(im)[0].tolist() == [[255, 128, 0], [1, 3, 156]]


def _grey_row(expected: list[int]) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        a = _arr(im)[0]
        assert a[:, 0].tolist() == expected
        assert (a[:, 0] == a[:, 1]).all() and (a[:, 0] == a[:, 2]).all()

    return check


def _float_tiff(values: list[float], name: str) -> Callable[[Path], Path]:
    return _save(name, lambda: Image.fromarray(np.array([values], dtype=np.float32)))


def _rgba() -> Image.Image:
    a = np.zeros((4, 4, 4), np.uint8)  # transparent black everywhere ...
    a[0, 0] = (0, 0, 0, 128)  # ... half-transparent black
    a[0, 1] = (200, 10, 20, 255)  # ... opaque colour
    return Image.fromarray(a, "RGBA")


def _check_rgba(im: Image.Image) -> None:
    assert im.getpixel((3, 3)) == BACKGROUND == (255, 255, 255)  # fully transparent -> white, not black
    assert im.getpixel((0, 0)) == (127, 127, 127)  # 50% black over white
    assert im.getpixel((1, 0)) == (200, 10, 20)


def _la() -> Image.Image:
    a = np.zeros((2, 2, 2), np.uint8)
    a[0, 0] = (40, 255)
    return Image.fromarray(a, "LA")


def _check_la(im: Image.Image) -> None:
    assert im.getpixel((0, 0)) == (40, 40, 40) and im.getpixel((1, 1)) == (255, 255, 255)


def _palette_transparent() -> Image.Image:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 0, 128, 0])  # index 0 black (transparent), index 1 green
    im.putpixel((1, 1), 1)
    return im


def _check_palette(im: Image.Image) -> None:
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((1, 1)) == (0, 128, 0)


def _check_trns_rgb(im: Image.Image) -> None:
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((1, 1)) == (10, 20, 30)


def _rgb_with_key() -> Image.Image:
    im = Image.new("RGB", (2, 2), (0, 0, 0))
    im.putpixel((1, 1), (10, 20, 30))
    return im


def _one_bit() -> Image.Image:
    im = Image.new("1", (8, 8), 0)
    im.putpixel((0, 0), 1)
    return im


def _check_one_bit(im: Image.Image) -> None:
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((1, 1)) == (0, 0, 0)


def _grey_l() -> Image.Image:
    return Image.fromarray(np.full((6, 10), 77, np.uint8))


def _check_grey_l(im: Image.Image, tol: int = 0) -> None:
    assert im.size == (10, 6) and _close(im.getpixel((5, 3)), (77, 77, 77), tol)


def _check_cmyk_naive(tol: int) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        inks = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 0, 255), (128, 0, 0, 51)]
        got = _patch_centres(im, len(inks))
        for ink, px in zip(inks, got, strict=True):
            assert _close(px, _naive_cmyk(ink), tol), (ink, px, _naive_cmyk(ink))

    return check


def _cmyk_jpeg_plain(d: Path) -> Path:
    """A CMYK JPEG *without* the Adobe marker, storing plain (non-inverted) ink values."""
    inverted = Image.eval(_cmyk_patches(), lambda v: 255 - v)  # Pillow's writer inverts: stored = plain
    data = _strip_adobe_app14(_jpeg_bytes(inverted, quality=100))
    p = d / "cmyk_plain.jpg"
    p.write_bytes(data)
    assert "adobe" not in Image.open(p).info
    return p


def _cmyk_jpeg_adobe(d: Path) -> Path:
    p = d / "cmyk_adobe.jpg"
    _cmyk_patches().save(p, quality=100)
    assert "adobe" in Image.open(p).info  # Photoshop convention: Adobe APP14 + inverted values
    return p


def _cyan_is_red(c: int, m: int, y: int, k: int) -> tuple[int, int, int]:
    if k:
        return (0, 0, 0)
    return (255, 0, 0) if c else (255, 255, 255)


def _cmyk_jpeg_icc(d: Path) -> Path:
    p = d / "cmyk_icc.jpg"
    _cmyk_patches().save(p, quality=100, icc_profile=make_cmyk_icc(_cyan_is_red))
    return p


def _check_cmyk_icc(im: Image.Image) -> None:
    white, cyan, _magenta, black, _mix = _patch_centres(im, 5)
    assert _close(white, (255, 255, 255), 6)
    assert _close(cyan, (255, 0, 0), 10)  # through the embedded profile, not the (0, 255, 255) formula
    assert _close(black, (0, 0, 0), 6)


def _lab_tiff() -> Image.Image:
    return Image.new("LAB", (4, 4), (128, 128, 128))  # L = 50, a = b = 0: sRGB mid grey 119


def _check_lab(im: Image.Image) -> None:
    assert _close(im.getpixel((1, 1)), (119, 119, 119), 2)


def _animated_gif(d: Path) -> Path:
    p = d / "anim.gif"
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    red.save(p, save_all=True, append_images=[blue], duration=100, loop=0)
    with Image.open(p) as im:
        assert im.n_frames == 2
    return p


def _check_red(im: Image.Image) -> None:
    assert im.getpixel((4, 4)) == (255, 0, 0)


def _animated_webp(d: Path) -> Path:
    p = d / "anim.webp"
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    red.save(p, save_all=True, append_images=[blue], duration=100, lossless=True)
    return p


def _gif_transparent(d: Path) -> Path:
    p = d / "transparent.gif"
    _palette_transparent().save(p, transparency=0)
    return p


def _exif_rotated(d: Path) -> Path:
    """40x20 stored pixels, left half red / right half blue, EXIF orientation 6 (display rotated 90° CW)."""
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = im.getexif()
    exif[0x0112] = 6
    p = d / "rotated.jpg"
    im.save(p, exif=exif, quality=95)
    return p


def _check_exif_ignored(im: Image.Image) -> None:
    assert im.size == (40, 20)  # stored grid, orientation tag ignored (the default)
    assert _close(im.getpixel((5, 10)), (255, 0, 0), 8) and _close(im.getpixel((35, 10)), (0, 0, 255), 8)


def _html(d: Path) -> Path:
    p = d / "x.jpg"
    p.write_bytes(
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Nope</body></html>\n"
    )
    return p


def _png_bomb_header(d: Path) -> Path:
    """A valid PNG header declaring 100000 x 100000 pixels (no pixel data needed to trip the limit)."""
    return _png_raw(d / "bomb.png", 100_000, 100_000, 8, 2, None)


def _bomb_lowered_limit(factor: float) -> Callable[[Path], Path]:
    # 100x100 = 10,000 pixels; the test lowers Image.MAX_IMAGE_PIXELS to 10,000 / factor
    def make(d: Path) -> Path:
        p = d / f"bomb_x{factor:g}.png"
        _noise(100, 100).save(p)
        return p

    return make


def _broken_symlink(d: Path) -> Path:
    p = d / "link.jpg"
    if os.name == "nt":
        pytest.skip("symlinks need privileges on Windows")
    os.symlink(d / "does-not-exist.jpg", p)
    return p


def _dir_named_jpg(d: Path) -> Path:
    p = d / "a.jpg"
    p.mkdir()
    return p


def _fifo(d: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    p = d / "pipe.jpg"
    os.mkfifo(p)
    return p


def _appledouble(d: Path) -> Path:
    p = d / "._photo.jpg"
    p.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\0" * 64)
    return p


_PATTERN_JPEG = lambda: _jpeg_bytes(_noise(320, 240), quality=90)  # noqa: E731
_PATTERN_PJPEG = lambda: _jpeg_bytes(_noise(320, 240), quality=90, progressive=True)  # noqa: E731


def _png_bytes() -> bytes:
    b = io.BytesIO()
    _noise(200, 150).save(b, "PNG")
    return b.getvalue()


def _fmt_bytes(fmt: str, **kw) -> Callable[[], bytes]:
    def data() -> bytes:
        b = io.BytesIO()
        im = _noise(200, 150)
        (im.convert("P") if fmt == "GIF" else im).save(b, fmt, **kw)
        return b.getvalue()

    return data


BOMB = "decompression bomb (…"

CASES: list[Case] = [
    # ---- must load -------------------------------------------------------------------------------------
    Case("rgb_jpeg", _save("plain.jpg", _pattern, quality=95), "ok", _is_pattern()),
    Case("progressive_jpeg", _save("prog.jpg", _pattern, quality=95, progressive=True), "ok", _is_pattern()),
    Case("grey_L_png", _save("grey.png", _grey_l), "ok", _check_grey_l, "grey replicated to R, G, B"),
    Case("grey_L_jpeg", _save("grey.jpg", _grey_l, quality=95), "ok", lambda im: _check_grey_l(im, 2)),
    Case("one_bit_png", _save("bits.png", _one_bit), "ok", _check_one_bit, "1 -> 255, 0 -> 0"),
    Case("grey16_png", _save("grey16.png", _grey16), "ok", _check_grey16, "I;16, v >> 8, not clipped"),
    Case("grey16_tiff", _save("grey16.tif", _grey16), "ok", _check_grey16, "I;16, v >> 8"),
    Case("grey16_pgm_mode_I", _pgm16, "ok", _check_grey16, "Pillow mode I, v >> 8"),
    Case("rgb16_png", _png16_rgb, "ok", _check_png16_rgb, "16-bit colour: Pillow keeps the high byte"),
    Case(
        "float_tiff_0_1",
        _float_tiff([0.0, 0.5, 1.0], "f01.tif"),
        "ok",
        _grey_row([0, 128, 255]),
        "F in [0, 1] -> x255",
    ),
    Case(
        "float_tiff_0_255",
        _float_tiff([0.0, 100.4, 255.0], "f255.tif"),
        "ok",
        _grey_row([0, 100, 255]),
        "F in [0, 255] -> as is",
    ),
    Case("rgba_png", _save("rgba.png", _rgba), "ok", _check_rgba, "composited on white"),
    Case("la_png", _save("la.png", _la), "ok", _check_la, "composited on white"),
    Case(
        "palette_transparent_png",
        _save("pal.png", _palette_transparent, transparency=0),
        "ok",
        _check_palette,
        "transparent index -> white",
    ),
    Case(
        "rgb_trns_key_png",
        _save("key.png", _rgb_with_key, transparency=(0, 0, 0)),
        "ok",
        _check_trns_rgb,
        "tRNS colour -> white",
    ),
    Case("cmyk_jpeg_adobe", _cmyk_jpeg_adobe, "ok", _check_cmyk_naive(8), "inverted Adobe CMYK, formula"),
    Case("cmyk_jpeg_no_adobe", _cmyk_jpeg_plain, "ok", _check_cmyk_naive(8), "plain CMYK, polarity undone"),
    Case("cmyk_jpeg_icc", _cmyk_jpeg_icc, "ok", _check_cmyk_icc, "embedded ICC profile used"),
    Case("cmyk_tiff", _save("cmyk.tif", _cmyk_patches), "ok", _check_cmyk_naive(0), "formula"),
    Case("lab_tiff", _save("lab.tif", _lab_tiff), "ok", _check_lab, "CIELab via LittleCMS"),
    Case("webp", _save("img.webp", _pattern, lossless=True), "ok", _is_pattern(0)),
    Case("tiff", _save("img.tiff", _pattern), "ok", _is_pattern(0)),
    Case("bmp", _save("img.bmp", _pattern), "ok", _is_pattern(0)),
    Case("one_by_one", _save("dot.png", lambda: Image.new("RGB", (1, 1), (1, 2, 3))), "ok", _size(1, 1)),
    Case("wide_4000x10", _save("wide.jpg", lambda: _noise(4000, 10)), "ok", _size(4000, 10)),
    Case("animated_gif_first_frame", _animated_gif, "ok", _check_red, "frame 0 (red), not frame 1 (blue)"),
    Case("animated_webp_first_frame", _animated_webp, "ok", _check_red),
    Case("gif_transparent", _gif_transparent, "ok", _check_palette, "transparent index -> white"),
    Case("uppercase_ext", _save("PHOTO.JPG", _pattern, format="JPEG", quality=95), "ok", _is_pattern()),
    Case("spaces_non_ascii", _save("mon été 猫 (1).jpg", _pattern, quality=95), "ok", _is_pattern()),
    Case(
        "png_named_jpg",
        _save("really_png.jpg", _pattern, format="PNG"),
        "ok",
        _is_pattern(0),
        "content decides the format",
    ),
    Case("exif_orientation_6", _exif_rotated, "ok", _check_exif_ignored, "EXIF orientation ignored"),
    # ---- must be reported ------------------------------------------------------------------------------
    Case("truncated_jpeg", _cut("cut.jpg", _PATTERN_JPEG, lambda n: n // 2), "truncated"),
    Case(
        "truncated_jpeg_no_eoi",
        _cut("noeoi.jpg", _PATTERN_JPEG, lambda n: n - 2),
        "truncated",
        note="only the 2-byte end marker missing",
    ),
    Case("truncated_progressive_jpeg", _cut("cutprog.jpg", _PATTERN_PJPEG, lambda n: n // 2), "truncated"),
    Case("truncated_jpeg_header", _cut("head.jpg", _PATTERN_JPEG, lambda n: 20), "corrupt header (JPEG)"),
    Case("truncated_png", _cut("cut.png", _png_bytes, lambda n: n // 2), "truncated"),
    Case("truncated_gif", _cut("cut.gif", _fmt_bytes("GIF"), lambda n: n // 2), "truncated"),
    Case("truncated_webp", _cut("cut.webp", _fmt_bytes("WEBP"), lambda n: n // 2), "truncated"),
    Case("truncated_tiff", _cut("cut.tif", _fmt_bytes("TIFF"), lambda n: n // 2), "truncated"),
    Case(
        "truncated_tiff_lzw",
        _cut("cut_lzw.tif", _fmt_bytes("TIFF", compression="tiff_lzw"), lambda n: n // 2),
        "truncated",
        note="directory written after the pixels: cut header",
    ),
    Case(
        "png_missing_iend_only",
        _cut("noiend.png", _png_bytes, lambda n: n - 12),
        "ok",
        _size(200, 150),
        "every pixel row present: nothing filled in",
    ),
    Case("truncated_bmp", _cut("cut.bmp", _fmt_bytes("BMP"), lambda n: n // 2), "truncated"),
    Case("zero_bytes", _write("empty.jpg", lambda: b""), "empty file"),
    Case("html_named_jpg", _html, "not an image (looks like HTML)"),
    Case(
        "text_named_png",
        _write("notes.png", lambda: b"label,box\ncat,1 2 3 4\n"),
        "not an image (looks like text)",
    ),
    Case(
        "svg_named_png",
        _write("logo.png", lambda: b'<?xml version="1.0"?>\n<svg xmlns="x"></svg>'),
        "not an image (looks like SVG)",
    ),
    Case("random_bytes", _write("noise.jpg", lambda: bytes(range(256)) * 4), "not an image (unknown format)"),
    Case("appledouble", _appledouble, "not an image (macOS '._' metadata file)"),
    Case("bomb_png_header", _png_bomb_header, BOMB, note="100000x100000 IHDR, default limit"),
    Case("bomb_over_2x_limit", _bomb_lowered_limit(4), BOMB, note="Pillow's DecompressionBombError"),
    Case("bomb_over_1x_limit", _bomb_lowered_limit(1.5), BOMB, note="Pillow only warns: error here"),
    Case("broken_symlink", _broken_symlink, "broken symlink"),
    Case("dir_named_jpg", _dir_named_jpg, "is a directory"),
    Case("missing", lambda d: d / "nope.jpg", "missing"),
    Case("fifo_named_jpg", _fifo, "not a regular file", note="would block a reader forever"),
    Case("float_out_of_range", _float_tiff([0.0, 300.0], "f300.tif"), "float pixels outside [0, 255] (…"),
]


def case_table() -> str:
    """The cases as a Markdown table (id -> outcome), for the README / closing notes."""
    lines = ["| case | outcome | note |", "|---|---|---|"]
    for c in CASES:
        outcome = "loads (RGB)" if c.expect == "ok" else f"BadImageError: `{c.expect}`"
        lines.append(f"| `{c.id}` | {outcome} | {c.note} |")
    return "\n".join(lines)


def _matches(reason: str, expect: str) -> bool:
    return reason.startswith(expect[:-1]) if expect.endswith("…") else reason == expect


@pytest.fixture
def bomb_limit(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    case: Case = request.node.callspec.params["case"]
    if case.id.startswith("bomb_over_"):
        factor = 4.0 if case.id == "bomb_over_2x_limit" else 1.5
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(100 * 100 / factor))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path: Path, bomb_limit: None) -> None:
    path = case.make(tmp_path)
    if case.expect == "ok":
        im = load_rgb(path)
        assert im.mode == "RGB"
        assert check_image(path) is None
        if case.check is not None:
            case.check(im)
    else:
        with pytest.raises(BadImageError) as ei:
            load_rgb(path)
        assert _matches(ei.value.reason, case.expect), ei.value.reason
        assert ei.value.path == str(path)
        assert _matches(check_image(path) or "", case.expect)


def test_case_ids_unique_and_table_renders() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert case_table().count("\n") == len(CASES) + 1


# --------------------------------------------------------------------------------------------------------
# policy details


def test_bomb_warning_as_error_filter_still_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _bomb_lowered_limit(1.5)(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(100 * 100 / 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadImageError) as ei:
            load_rgb(p)
    assert ei.value.reason == "decompression bomb (10000 pixels > limit 6666)"


def test_load_truncated_images_flag_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _cut("cut.jpg", _PATTERN_JPEG, lambda n: n // 2)(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ConfigError, match="LOAD_TRUNCATED_IMAGES"):
        load_rgb(p)
    with pytest.raises(ConfigError):
        check_image(p)  # a scan must not report "all fine" either


def test_exif_transpose_opt_in(tmp_path: Path) -> None:
    p = _exif_rotated(tmp_path)
    im = load_rgb(p, exif_transpose=True)
    assert im.size == (20, 40)  # rotated 90° clockwise: the red left half is now on top
    assert _close(im.getpixel((10, 5)), (255, 0, 0), 8) and _close(im.getpixel((10, 35)), (0, 0, 255), 8)
    # the box is in the frame of the returned image: after rotation, the top half is red
    top = load_rgb(p, exif_transpose=True, box=(0, 0, 20, 20))
    assert top.size == (20, 20) and _close(np.asarray(top).reshape(-1, 3).mean(0), (255, 0, 0), 10)


def test_single_decode_no_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _save("plain.jpg", _pattern, quality=95)(tmp_path)
    calls: list[str] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):  # type: ignore[no-untyped-def]
        if self.tile:
            calls.append("decode")
        return real_load(self)

    def no_verify(self):  # type: ignore[no-untyped-def]
        raise AssertionError("verify() must not be used: it costs a second decode")

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    monkeypatch.setattr(ImageFile.ImageFile, "verify", no_verify)
    monkeypatch.setattr(Image.Image, "verify", no_verify, raising=False)
    load_rgb(p)
    assert calls == ["decode"]


def test_result_is_loaded_and_file_closed(tmp_path: Path) -> None:
    for make in (_save("a.jpg", _pattern), _animated_gif, _save("t.tif", _pattern)):
        p = make(tmp_path)
        im = load_rgb(p)
        os.remove(p)  # pixels already in memory
        assert im.getpixel((4, 4)) is not None and len(im.tobytes()) == im.size[0] * im.size[1] * 3


def test_box_crop_and_clipping(tmp_path: Path) -> None:
    p = _save("p.png", _pattern)(tmp_path)  # 64 x 48, quadrants
    assert _arr(load_rgb(p, box=(0, 0, 32, 24))).reshape(-1, 3).tolist() == [[255, 0, 0]] * (32 * 24)
    assert load_rgb(p, box=(40, 30, 100, 100)).size == (24, 18)  # clipped to the image, not padded
    assert load_rgb(p, box=(-10, -10, 10, 10)).size == (10, 10)
    assert load_rgb(p, box=(0.5, 1.2, 9.1, 9.0)).size == (10, 8)  # widened to whole pixels: (0, 1, 10, 9)
    assert load_rgb(p, box=(-5, -5, 500, 500)).size == (64, 48)  # whole image
    assert load_rgb(p, box=(32, 0, 33, 1)).getpixel((0, 0)) == (0, 255, 0)  # x1 exclusive
    for bad in [(70, 0, 80, 10), (10, 10, 10, 20), (20, 0, 10, 10), (0, 0, float("nan"), 3), (1, 2, 3)]:
        with pytest.raises(DatasetError):
            load_rgb(p, box=bad)  # type: ignore[arg-type]


def test_box_on_palette_and_16bit(tmp_path: Path) -> None:
    assert load_rgb(
        _save("pal.png", _palette_transparent, transparency=0)(tmp_path), box=(1, 1, 2, 2)
    ).getpixel((0, 0)) == (0, 128, 0)
    assert load_rgb(_save("g.png", _grey16)(tmp_path), box=(4, 0, 5, 1)).getpixel((0, 0)) == (128, 128, 128)


def test_draft_size_is_opt_in_and_respects_box(tmp_path: Path) -> None:
    p = tmp_path / "big.jpg"
    _noise(1600, 1200).resize((1600, 1200)).save(p, quality=80)
    assert load_rgb(p).size == (1600, 1200)  # default: full decode
    assert load_rgb(p, draft_size=(200, 150)).size == (200, 150)  # 1/8
    assert load_rgb(p, draft_size=(300, 300)).size == (400, 300)  # 1/4 keeps >= 300 x 300
    assert load_rgb(p, draft_size=(1000, 1000)).size == (1600, 1200)  # < 2x the target: no reduction
    # box (800 x 600) with target 200 x 150 -> 1/4 (the region, not the image, must stay >= target)
    assert load_rgb(p, box=(800, 600, 1600, 1200), draft_size=(200, 150)).size == (200, 150)
    assert load_rgb(p, box=(0, 0, 400, 300), draft_size=(100, 75)).size == (100, 75)
    png = _save("big.png", lambda: _noise(800, 600))(tmp_path)
    assert load_rgb(png, draft_size=(100, 75)).size == (800, 600)  # JPEG only
    with pytest.raises(ValueError):
        load_rgb(p, draft_size=(0, 10))


def test_draft_size_with_exif_rotation(tmp_path: Path) -> None:
    im = _noise(800, 400)
    exif = im.getexif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif)
    assert load_rgb(p, exif_transpose=True).size == (400, 800)
    assert load_rgb(p, exif_transpose=True, draft_size=(100, 200)).size == (100, 200)
    assert load_rgb(p, exif_transpose=True, box=(0, 0, 400, 400), draft_size=(100, 100)).size == (100, 100)


def test_is_image_file() -> None:
    assert IMAGE_EXTENSIONS == frozenset(e.lower() for e in IMAGE_EXTENSIONS)
    assert all(e.startswith(".") for e in IMAGE_EXTENSIONS)
    for name in ["a.jpg", "B.JPEG", "c.Png", "d e.tif", "été.webp", Path("x/y.BMP"), "z.gif", "w.pgm"]:
        assert is_image_file(name), name
    for name in ["a.txt", "jpg", "a.jpg.part", "._a.jpg", "README", "x/.DS_Store", "a.svg"]:
        assert not is_image_file(name), name


def test_scan_images_reports_every_bad_file(tmp_path: Path) -> None:
    good = [_save(f"g{i}.png", _pattern)(tmp_path) for i in range(5)]
    empty = _write("empty.jpg", lambda: b"")(tmp_path)
    html = _html(tmp_path)
    cut = _cut("cut.png", _png_bytes, lambda n: n // 2)(tmp_path)
    missing = tmp_path / "gone.jpg"
    paths = [good[0], empty, good[1], html, good[2], cut, missing, good[3], good[4]]
    expected = [
        (str(empty), "empty file"),
        (str(html), "not an image (looks like HTML)"),
        (str(cut), "truncated"),
        (str(missing), "missing"),
    ]
    for workers in (1, 2, None):
        seen: list[tuple[int, int]] = []
        assert (
            scan_images(paths, workers=workers, progress=lambda d, t, seen=seen: seen.append((d, t)))
            == expected
        )
        assert len(seen) == len(paths) and seen[-1] == (len(paths), len(paths))
    assert scan_images([]) == []
    assert scan_images(good) == []
