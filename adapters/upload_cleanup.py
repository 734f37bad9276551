"""Upload folders of registrations (extracted archives), and removing the ones a crash left behind.

An upload is extracted into ``$TMPDIR/taskswap-upload-*`` (older versions also copied it
into ``$TMPDIR/taskswap-reg-*``; registration now reads it in place); it is removed when the
call returns, but a ``kill -9`` mid-registration leaves it (up to the archive cap, 512 MiB
by default), and such folders would pile up crash after crash. The server calls
:func:`collect_stale_uploads` at startup, next to the store's own gc (found by
``tests/resilience/test_crash_server.py``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

UPLOAD_PREFIXES = ("taskswap-upload-", "taskswap-reg-")


def collect_stale_uploads(grace_s: float, tmpdir: str | Path | None = None) -> list[str]:
    """Remove scratch folders older than ``grace_s`` seconds; returns their names.

    The grace period protects registrations running right now in other processes on the
    same host (several workers or replicas share ``$TMPDIR``).

    >>> collect_stale_uploads(3600, tempfile.mkdtemp())
    []
    """
    root = Path(tmpdir or tempfile.gettempdir())
    cutoff = time.time() - grace_s
    removed = []
    for prefix in UPLOAD_PREFIXES:
        for p in root.glob(f"{prefix}*"):
            try:
                if p.is_dir() and not p.is_symlink() and p.stat().st_mtime <= cutoff:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p.name)
            except OSError:  # vanished meanwhile (its own process finished): nothing to do
                pass
    return removed
