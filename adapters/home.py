"""Where Taskswap keeps its caches on this machine (converted backbones, store caches, features).

A module of its own, importing nothing heavy, so the store can name its cache folder
without loading the backbone code.
"""

from __future__ import annotations

import os
from pathlib import Path


def taskswap_home() -> Path:
    """``$TASKSWAP_HOME`` or ``~/.cache/taskswap``: where converted backbones are cached."""
    env = os.environ.get("TASKSWAP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "taskswap"
