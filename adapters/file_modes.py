"""File modes for files that another user's process reads.

The server often reads files some other user wrote: backbones converted at image build
time by root and served by an unprivileged user, adapters written into a shared store by
one replica (or an operator's upload) and loaded by another. safetensors' ``save_file``
(so ``save_pretrained``) creates its files with mode 0600 and ``tempfile`` folders are
0700, whatever the umask, so such files are made group/other-readable explicitly before
they are published.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "w.bin").write_bytes(b"x"); (d / "w.bin").chmod(0o600)
    1
    >>> make_readable(d); oct((d / "w.bin").stat().st_mode & 0o777), oct(d.stat().st_mode & 0o777)
    ('0o644', '0o755')
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Read for everyone on files; read + traverse for everyone on folders. Only bits are
# added: owner write, and an executable bit already set, are kept.
_FILE_BITS = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_DIR_BITS = _FILE_BITS | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def make_readable(root: Path) -> None:
    """Add read permission for all (and traverse, on folders) to ``root`` and everything in it.

    Symbolic links are neither followed nor changed (adapter folders refuse them anyway).
    """
    root = Path(root)
    _add_bits(root, _DIR_BITS if root.is_dir() else _FILE_BITS)
    if not root.is_dir() or root.is_symlink():
        return
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            _add_bits(Path(folder) / name, _DIR_BITS)
        for name in files:
            _add_bits(Path(folder) / name, _FILE_BITS)


def _add_bits(path: Path, bits: int) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return
    if stat.S_IMODE(st.st_mode) & bits != bits:
        os.chmod(path, stat.S_IMODE(st.st_mode) | bits)


def unreadable(path: Path, limit: int = 3) -> list[str]:
    """Why this process cannot read ``path``: folders on the way it may not traverse, or
    files/folders inside it it may not read (at most ``limit``), as ``'<path> (mode 0600,
    uid 0)'`` strings; ``[]`` when nothing is in the way.

    >>> import tempfile; unreadable(Path(tempfile.mkdtemp()))
    []
    """
    path = Path(path).absolute()
    for parent in reversed(path.parents):  # the first folder on the way we cannot enter
        if parent.is_dir() and not _access(parent, os.X_OK):
            return [_describe(parent)]
    if not os.path.lexists(path):
        return []
    problems = []

    def check(p: Path, is_dir: bool) -> None:
        if not p.is_symlink() and not _access(p, os.R_OK | (os.X_OK if is_dir else 0)):
            problems.append(_describe(p))

    check(path, path.is_dir())
    if path.is_dir() and not problems:
        for folder, dirs, files in os.walk(path):  # a model folder: a handful of entries
            for name in dirs:
                check(Path(folder) / name, True)
            for name in files:
                check(Path(folder) / name, False)
            if len(problems) >= limit:
                break
    return problems[:limit]


def _describe(path: Path) -> str:
    try:
        st = path.lstat()
        return f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid})"
    except OSError:
        return str(path)


def _access(path: Path, mode: int) -> bool:
    # The effective ids decide what open() may do (they differ from the real ones only in
    # a process that switched user, e.g. a test dropping root).
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
