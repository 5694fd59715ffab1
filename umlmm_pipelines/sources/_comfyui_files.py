"""Finding and reading ComfyUI workflow files without ever leaving a configured root.

Workflow directories are user-controlled: they hold symlinks, huge images, FIFOs, names that are
not UTF-8 and files that are not workflows at all. The scan therefore only *lists* files (with
``lstat``/``stat``, never opening them) and attaches a ``problem`` to any file that must not be
read; the reader re-checks containment and size when it opens the file, so a file swapped for a
symlink or grown past the cap between scan and read is still refused. PNG text chunks are read
by seeking over the image data, so a folder of large renders costs a few small reads per file.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}


class SkippedFile(Exception):
    """A workflow file that is not stored; ``category`` groups the reasons in the run report."""

    def __init__(self, reason: str, category: str) -> None:
        super().__init__(reason)
        self.category = category


# ---------------------------------------------------------------------------------------------------------------
# include / exclude patterns
# ---------------------------------------------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A case-insensitive regex for one glob pattern over ``/``-separated relative paths.

    ``**/`` matches any number of directories (also none), ``**`` anything, ``*`` and ``?``
    stay within one path segment, ``[abc]``/``[!abc]`` are character classes. A pattern
    without ``/`` matches a file name at any depth (``*.png`` = ``**/*.png``); a leading ``/``
    anchors it at the root. Case is ignored because extensions are written both ways (``.PNG``).
    """
    text = pattern.strip().replace("\\", "/")
    if text.startswith("/"):
        text = text.lstrip("/")
    elif "/" not in text:
        text = "**/" + text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[" and (end := text.find("]", i + 2)) != -1:
            body = text[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("^", "\\^") + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class GlobSet:
    """Several glob patterns; a path matches the set when it matches any of them."""

    patterns: tuple[str, ...]
    regexes: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regexes", tuple(glob_regex(p) for p in self.patterns if p.strip()))

    def matches(self, relative_path: str) -> bool:
        return any(regex.fullmatch(relative_path) for regex in self.regexes)

    def covers_directory(self, relative_dir: str) -> bool:
        """Whether every file under the directory is matched (``old/**``), so the walk can prune it."""
        return any(regex.fullmatch(relative_dir + "/") for regex in self.regexes)


# ---------------------------------------------------------------------------------------------------------------
# scanning a root
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundFile:
    """A file under a root that matched the patterns; ``problem`` says why it must not be read."""

    relative_path: str
    size: int
    mtime_ns: int
    problem: str | None = None
    category: str | None = None


@dataclass
class RootScan:
    """One root's listing. ``walk_errors`` (unreadable subdirectories) make the listing incomplete."""

    root: str
    real_root: str
    files: list[FoundFile] = field(default_factory=list)
    walk_errors: list[str] = field(default_factory=list)
    outside_dir_links: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.walk_errors


def absolute_root(root: str) -> str:
    """The configured root as an absolute, normalized path (how it is stored and shown)."""
    return os.path.abspath(os.path.expanduser(root.strip()))


def within(real_root: str, real_path: str) -> bool:
    """Whether a resolved path is the resolved root or lies below it."""
    try:
        return os.path.commonpath([real_root, real_path]) == real_root
    except ValueError:  # different drives on Windows
        return False


def scan_root(root: str, include: GlobSet, exclude: GlobSet, max_bytes: int, max_id_chars: int) -> RootScan:
    """List the matching files under ``root``; raise OSError when the root itself cannot be listed.

    Directory symlinks are never followed: one that stays inside the root only repeats files
    the walk reaches by their real path, and one that leaves the root must not be read.
    """
    real_root = os.path.realpath(root)
    if not os.path.isdir(real_root):
        raise NotADirectoryError("not a directory" if os.path.exists(real_root) else "does not exist")
    with os.scandir(real_root):  # raises PermissionError for an unreadable root
        pass
    scan = RootScan(root=root, real_root=real_root)

    def on_error(exc: OSError) -> None:
        where = os.path.relpath(exc.filename, real_root) if exc.filename else "?"
        scan.walk_errors.append(f"{_display(where)}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(real_root, onerror=on_error, followlinks=False):
        relative_dir = os.path.relpath(dirpath, real_root)
        prefix = "" if relative_dir == "." else relative_dir.replace(os.sep, "/") + "/"
        kept = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not within(real_root, target):
                    scan.outside_dir_links.append(f"{_display(prefix + name)} -> {_display(target)}")
                continue
            if exclude.covers_directory(prefix + name):
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            relative = prefix + name
            if not include.matches(relative) or exclude.matches(relative):
                continue
            scan.files.append(_inspect(real_root, os.path.join(dirpath, name), relative, max_bytes, max_id_chars))
    return scan


def _inspect(real_root: str, full: str, relative: str, max_bytes: int, max_id_chars: int) -> FoundFile:
    """Stat one file (never open it) and say whether it may be read."""
    shown = _display(relative)
    try:
        link = os.lstat(full)
    except OSError as exc:
        return FoundFile(shown, 0, 0, f"cannot stat: {exc.strerror or exc}", "unreadable")
    if shown != relative:
        return FoundFile(shown, link.st_size, link.st_mtime_ns, "file name is not valid UTF-8", "unreadable")
    if len(shown) > max_id_chars:
        return FoundFile(shown, link.st_size, link.st_mtime_ns,
                         f"path is longer than the catalog key allows ({max_id_chars} characters)", "unreadable")
    info = link
    if stat.S_ISLNK(link.st_mode):
        target = os.path.realpath(full)
        if not within(real_root, target):
            return FoundFile(shown, link.st_size, link.st_mtime_ns,
                             f"symlink leaves its root (-> {_display(target)})", "symlink leaving its root")
        try:
            info = os.stat(target)
        except OSError as exc:
            return FoundFile(shown, link.st_size, link.st_mtime_ns,
                             f"broken symlink (-> {_display(target)}): {exc.strerror or exc}", "unreadable")
    if not stat.S_ISREG(info.st_mode):
        return FoundFile(shown, info.st_size, info.st_mtime_ns, "not a regular file", "unreadable")
    if info.st_size > max_bytes:
        return FoundFile(shown, info.st_size, info.st_mtime_ns,
                         f"{info.st_size} bytes is above MaxFileBytes ({max_bytes})", "above MaxFileBytes")
    return FoundFile(shown, info.st_size, info.st_mtime_ns)


def _display(path: str) -> str:
    """A path as text that can be stored and logged (undecodable bytes shown as escapes)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def open_within(real_root: str, relative_path: str, max_bytes: int) -> Iterator[BinaryIO]:
    """Open a scanned file for reading after checking, again, that it is a regular file in the root under the cap.

    The path is resolved and opened without following a final symlink, and O_NONBLOCK keeps a
    FIFO that replaced the file from blocking the run.
    """
    real = os.path.realpath(os.path.join(real_root, relative_path))
    if not within(real_root, real):
        raise SkippedFile(f"resolves outside its root (-> {_display(real)})", "symlink leaving its root")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise SkippedFile(f"cannot open: {exc.strerror or exc}", "unreadable") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SkippedFile("not a regular file", "unreadable")
        if info.st_size > max_bytes:
            raise SkippedFile(f"{info.st_size} bytes is above MaxFileBytes ({max_bytes})", "above MaxFileBytes")
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with stream:
        yield stream


def read_at_most(stream: BinaryIO, max_bytes: int) -> bytes:
    """The whole file, refusing one that grew past the cap after it was opened."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SkippedFile(f"grew above MaxFileBytes ({max_bytes}) while being read", "above MaxFileBytes")
    return data


def png_text_chunks(stream: BinaryIO, keywords: Iterable[str], max_bytes: int) -> dict[str, str]:
    """The text of the ``tEXt``/``zTXt``/``iTXt`` chunks named by ``keywords`` (first of each wins).

    The stream must be positioned after the PNG signature. Other chunks (the image data) are
    skipped with a seek; compressed text is inflated to at most ``max_bytes`` so a
    decompression bomb is refused rather than expanded. A truncated file keeps what was found.
    """
    wanted = {k.encode("latin-1") for k in keywords}
    found: dict[str, str] = {}
    while True:
        header = stream.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            break
        if kind not in _TEXT_CHUNKS or length > max_bytes:
            stream.seek(length + 4, os.SEEK_CUR)
            continue
        data = stream.read(length)
        crc = stream.read(4)
        if len(data) < length or len(crc) < 4:
            break
        keyword, _, body = data.partition(b"\0")
        if keyword not in wanted or keyword.decode("latin-1") in found:
            continue
        if zlib.crc32(kind + data) != int.from_bytes(crc, "big"):
            raise SkippedFile(f"PNG {kind.decode()} chunk '{keyword.decode('latin-1')}' is corrupt (CRC mismatch)",
                              "corrupt PNG")
        found[keyword.decode("latin-1")] = _chunk_text(kind, body, max_bytes)
    return found


def _chunk_text(kind: bytes, body: bytes, max_bytes: int) -> str:
    if kind == b"tEXt":
        return body.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(body[1:], max_bytes).decode("latin-1")
    # iTXt: compression flag, method, language tag \0, translated keyword \0, UTF-8 text
    compressed = body[:1] == b"\x01"
    _language, _, rest = body[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    raw = _inflate(text, max_bytes) if compressed else text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkippedFile(f"PNG iTXt chunk is not UTF-8: {exc}", "corrupt PNG") from None


def _inflate(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise SkippedFile(f"PNG text chunk cannot be decompressed: {exc}", "corrupt PNG") from None
    if len(out) > max_bytes:
        raise SkippedFile(f"PNG text chunk inflates above MaxFileBytes ({max_bytes})", "above MaxFileBytes")
    return out
