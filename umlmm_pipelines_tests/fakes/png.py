"""Tiny PNG files built with the standard library, carrying ComfyUI's text chunks the way its SaveImage does."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One chunk: length, type, data, CRC over type and data (or a given, wrong one)."""
    checksum = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def text(keyword: str, value: str) -> bytes:
    """``tEXt``: Latin-1 keyword and text, what Pillow's PngInfo.add_text writes for ComfyUI's ASCII JSON."""
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + value.encode("latin-1"))


def ztxt(keyword: str, value: str) -> bytes:
    """``zTXt``: keyword, compression method 0, deflated Latin-1 text."""
    return chunk(b"zTXt", keyword.encode("latin-1") + b"\0\0" + zlib.compress(value.encode("latin-1")))


def itxt(keyword: str, value: str, compressed: bool = False, language: str = "en") -> bytes:
    """``iTXt``: keyword, compression flag and method, language tag, translated keyword, UTF-8 text."""
    body = value.encode("utf-8")
    if compressed:
        body = zlib.compress(body)
    header = keyword.encode("latin-1") + b"\0" + bytes([1 if compressed else 0, 0])
    return chunk(b"iTXt", header + language.encode("ascii") + b"\0" + b"\0" + body)


def png(*before_image: bytes, after_image: tuple[bytes, ...] = (), pixels: int = 1) -> bytes:
    """A valid ``pixels`` x 1 RGB PNG with the given chunks before (and after) its image data."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", pixels, 1, 8, 2, 0, 0, 0))
    image = chunk(b"IDAT", zlib.compress(b"\x00" + b"\x7f" * 3 * pixels))
    return SIGNATURE + header + b"".join(before_image) + image + b"".join(after_image) + chunk(b"IEND", b"")
