"""Resident memory of a process tree, read from /proc (Linux), for the memory proofs.

``bentoml serve`` starts its workers in process groups of their own, so the tree is
walked by parent pid, not by process group.
"""

from __future__ import annotations

from pathlib import Path


def _parents() -> dict[int, int]:
    """pid -> ppid for every live process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "(comm)": state ppid pgrp ...
        out[int(d.name)] = int(fields[1])
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its live descendants (a server and its workers)."""
    parents = _parents()
    tree, frontier = [pid], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        tree += kids
        frontier = kids
    return [p for p in tree if p in parents]


def rss_bytes(pid: int) -> int:
    """VmRSS of one process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Summed RSS of ``pid`` and its descendants (e.g. ``bentoml serve`` + workers)."""
    return sum(rss_bytes(p) for p in tree_pids(pid))
