"""Safe extraction of uploaded adapter archives (zip, tar, tar.gz).

Refused: links, devices, absolute paths, ``..``, more than ``max_entries`` entries,
more than ``max_bytes`` once decompressed. Sizes are counted while writing, not
taken from headers, so a decompression bomb that lies about its sizes stops at the cap.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from adapters.errors import InvalidAdapter

_CHUNK = 1 << 16


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
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidAdapter(f"upload is not a readable zip archive ({exc})") from exc
    if len(infos) > max_entries:
        raise InvalidAdapter(f"archive has {len(infos)} entries; at most {max_entries} allowed")
    budget = [0]
    for info in infos:
        rel = _safe_relpath(info.filename)
        mode = (info.external_attr >> 16) & 0o170000
        if mode == 0o120000:
            raise InvalidAdapter(f"archive entry {info.filename!r} is a symbolic link; links are refused")
        target = dest.joinpath(*rel.parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src:
                _copy_capped(src, target, budget, max_bytes)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise InvalidAdapter(f"archive entry {info.filename!r} is corrupt ({exc})") from exc


def _extract_tar(data: bytes, dest: Path, max_bytes: int, max_entries: int) -> None:
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidAdapter("upload is not a zip, tar or tar.gz archive") from exc
    budget, count = [0], 0
    try:
        for member in tf:  # streamed: never list a hostile archive in full
            count += 1
            if count > max_entries:
                raise InvalidAdapter(f"archive has more than {max_entries} entries")
            rel = _safe_relpath(member.name)
            if member.issym() or member.islnk():
                raise InvalidAdapter(f"archive entry {member.name!r} is a link; links are refused")
            target = dest.joinpath(*rel.parts) if rel.parts else dest
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise InvalidAdapter(f"archive entry {member.name!r} is not a regular file")
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            _copy_capped(src, target, budget, max_bytes)
    except (tarfile.TarError, OSError, EOFError, zlib_error()) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidAdapter(f"archive is corrupt ({exc})") from exc


def zlib_error():
    import zlib
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
