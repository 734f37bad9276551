"""Safe extraction of uploaded adapter archives (zip, tar, tar.gz).

Refused: links, devices, absolute paths, ``..``, more than ``max_entries`` entries,
more than ``max_bytes`` once decompressed. Sizes are counted while writing, not
taken from headers, so a decompression bomb that lies about its sizes stops at the cap.
A compressed tar is also decompressed through a counting reader: ``tarfile`` reads a
GNU long-name or pax header whole into memory, so a 400 KB tar.gz claiming a 400 MB
name would otherwise allocate 400 MB before a single file is written.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from adapters.errors import InvalidAdapter

_CHUNK = 1 << 16
_MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux file systems: longer is an OSError, refused first


class _Layout:
    """The folders and files an archive has created so far, so that an entry clashing with
    an earlier one (a file ``x`` then ``x/y``, a file then a folder of the same name, the
    same file twice) is a 422 naming it instead of an ``OSError`` from the file system."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.kinds: dict[PurePosixPath, str] = {PurePosixPath(): "dir"}

    def place(self, name: str, rel: PurePosixPath, is_dir: bool) -> Path:
        """The path to create for entry ``name``; its parent folders are created here."""
        if not rel.parts and not is_dir:
            raise InvalidAdapter(f"archive entry {_short(name)} is a file without a name")
        for part in rel.parts:
            if len(part.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT_BYTES:
                raise InvalidAdapter(f"archive entry {_short(name)} has a name component longer "
                                     f"than {_MAX_COMPONENT_BYTES} bytes")
        for parent in reversed(rel.parents):
            kind = self.kinds.get(parent)
            if kind == "file":
                raise InvalidAdapter(f"archive entry {_short(name)} is inside {str(parent)!r}, "
                                     "which an earlier entry made a file")
            self.kinds[parent] = "dir"
        kind = self.kinds.get(rel)
        if kind == "file" or (kind == "dir" and not is_dir):
            raise InvalidAdapter(f"archive entry {_short(name)} clashes with an earlier entry of "
                                 f"the same name ({kind}); each name may appear once")
        self.kinds[rel] = "dir" if is_dir else "file"
        target = self.dest.joinpath(*rel.parts)
        try:
            (target if is_dir else target.parent).mkdir(parents=True, exist_ok=True)
        except (OSError, ValueError) as exc:
            raise InvalidAdapter(f"archive entry {_short(name)} cannot be extracted ({exc})") from exc
        return target


def _short(name: str) -> str:
    return repr(name) if len(name) <= 120 else repr(name[:100]) + f"... ({len(name)} characters)"


def extract_archive(data: bytes, dest: Path, max_bytes: int = 256 << 20, max_entries: int = 64) -> Path:
    """Extract ``data`` into ``dest`` and return the adapter folder inside it.

    A single top-level folder is stepped into, so both ``zip -r a.zip mydir`` and an
    archive of the files themselves work.

    >>> import io, zipfile, tempfile, pathlib
    >>> buf = io.BytesIO(); zipfile.ZipFile(buf, "w").writestr("adapter.json", "{}")
    >>> extract_archive(buf.getvalue(), pathlib.Path(tempfile.mkdtemp())).name != ""
    True
    """
    dest.mkdir(parents=True, exist_ok=True)
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        _extract_zip(data, dest, max_bytes, max_entries)
    else:
        _extract_tar(data, dest, max_bytes, max_entries)
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _safe_relpath(name: str) -> PurePosixPath:
    if "\x00" in name:
        raise InvalidAdapter(f"archive entry {_short(name)} has a NUL character in its name")
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InvalidAdapter(f"archive entry {name!r} has an absolute path; use relative paths")
    if any(part == ".." for part in p.parts):
        raise InvalidAdapter(f"archive entry {name!r} contains '..'; paths must stay inside the archive")
    if len(p.parts) > 3:
        raise InvalidAdapter(f"archive entry {name!r} is nested too deep (an adapter is one folder)")
    return p


def _copy_capped(src, dst_path: Path, budget: list[int], max_bytes: int) -> None:
    with open(dst_path, "wb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] += len(chunk)
            if budget[0] > max_bytes:
                raise InvalidAdapter(f"archive expands past {max_bytes} bytes; adapters are small, "
                                     "this looks like a decompression bomb")
            out.write(chunk)


def _extract_zip(data: bytes, dest: Path, max_bytes: int, max_entries: int) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as exc:  # noqa: BLE001  zipfile parsing hostile bytes raises many types
        # (BadZipFile, NotImplementedError "zip file version 6.4", struct.error, ...: fuzzed)
        raise InvalidAdapter(f"upload is not a readable zip archive ({exc})") from exc
    if len(infos) > max_entries:
        raise InvalidAdapter(f"archive has {len(infos)} entries; at most {max_entries} allowed")
    budget, layout = [0], _Layout(dest)
    for info in infos:
        name = info.filename
        rel = _safe_relpath(name)
        mode = (info.external_attr >> 16) & 0o170000
        if mode == 0o120000:
            raise InvalidAdapter(f"archive entry {_short(name)} is a symbolic link; links are refused")
        if mode not in (0, 0o100000, 0o040000):
            raise InvalidAdapter(f"archive entry {_short(name)} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise InvalidAdapter(f"archive entry {_short(name)} is encrypted; upload an "
                                 "unencrypted archive")
        is_dir = name.endswith("/")  # ZipInfo.is_dir() raises IndexError on an empty name
        target = layout.place(name, rel, is_dir)
        if is_dir:
            continue
        try:
            with zf.open(info) as src:
                _copy_capped(src, target, budget, max_bytes)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError,
                RuntimeError, zlib_error()) as exc:  # corrupt deflate data / offsets (found by fuzzing)
            raise InvalidAdapter(f"archive entry {_short(name)} is corrupt or unsupported ({exc})") from exc


class _CappedReader(io.RawIOBase):
    """A read-only stream that refuses to yield more than ``limit`` bytes in total.

    Each read asks the source for at most what is left (+1 to notice the overrun), so
    memory stays bounded even when a caller asks for a huge block at once.
    """

    def __init__(self, src, limit: int):
        self.src, self.left = src, limit

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left + 1 if n is None or n < 0 else min(n, self.left + 1)
        data = self.src.read(n)
        self.left -= len(data)
        if self.left < 0:
            raise InvalidAdapter("archive expands past its size cap; adapters are small, "
                                 "this looks like a decompression bomb")
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _decompressed(data: bytes):
    """A file object over the tar stream inside ``data`` (gzip, bzip2, xz or plain)."""
    raw = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if data[:3] == b"BZh":
        return bz2.BZ2File(raw, mode="rb")
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _extract_tar(data: bytes, dest: Path, max_bytes: int, max_entries: int) -> None:
    # Headers and padding (<= 3 blocks of 512 per entry, plus the end marker) ride on top
    # of the file bytes that _copy_capped counts; anything past that is a bomb.
    limit = max_bytes + (max_entries + 4) * 3 * 512 + (1 << 20)
    try:  # stream mode ("r|"): members are read in order, nothing is seeked or listed
        tf = tarfile.open(fileobj=_CappedReader(_decompressed(data), limit), mode="r|")
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib_error()) as exc:
        raise InvalidAdapter("upload is not a zip, tar or tar.gz archive") from exc
    except InvalidAdapter:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    budget, count, layout = [0], 0, _Layout(dest)
    try:
        for member in tf:  # streamed: never list a hostile archive in full
            count += 1
            if count > max_entries:
                raise InvalidAdapter(f"archive has more than {max_entries} entries")
            rel = _safe_relpath(member.name)
            if member.issym() or member.islnk():
                raise InvalidAdapter(f"archive entry {member.name!r} is a link; links are refused")
            if not member.isdir() and not member.isfile():
                raise InvalidAdapter(f"archive entry {_short(member.name)} is not a regular file")
            target = layout.place(member.name, rel, member.isdir())
            if member.isdir():
                continue
            src = tf.extractfile(member)
            _copy_capped(src, target, budget, max_bytes)
    except (tarfile.TarError, OSError, EOFError, ValueError, lzma.LZMAError, zlib_error()) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidAdapter(f"archive is corrupt ({exc})") from exc
    except InvalidAdapter:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def zlib_error():
    return zlib.error


def make_archive(folder: Path, fmt: str = "zip") -> bytes:
    """Pack an adapter folder's files (flat) into zip or tar.gz bytes."""
    buf = io.BytesIO()
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, p.name)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for p in files:
                tf.add(p, arcname=p.name)
    return buf.getvalue()
