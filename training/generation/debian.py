"""Which Debian packages own files, and their versions (``dpkg-query``), for data sets read
from the system (translation catalogs, manual pages) to record in their cards."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _query(args: list[str]) -> str:
    try:
        return subprocess.run(["dpkg-query", *args], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def owners(patterns: list[str]) -> dict[str, str]:
    """File path -> owning package, for paths or globs (``dpkg-query -S``); {} without dpkg."""
    owned = {}
    for line in _query(["-S", *patterns]).splitlines() if patterns else []:
        pkg, sep, path = line.partition(": ")
        if sep:
            owned[path.strip()] = pkg.split(",")[0].split(":")[0].strip()
    return owned


def package_versions(names: list[str]) -> list[str]:
    """``package=version`` of installed packages ``names``, sorted; [] without dpkg."""
    if not names:
        return []
    return sorted(_query(["-W", "-f", "${Package}=${Version}\\n", *sorted(set(names))]).split())


def debian_packages(files: list[Path]) -> list[str]:
    """``package=version`` of the packages owning ``files``."""
    return package_versions(sorted(set(owners([str(f) for f in files]).values())))
