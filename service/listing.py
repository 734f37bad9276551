"""One page of ``GET /adapters``: a name filter, then an offset/limit window.

With tens of thousands of tasks a listing of everything is megabytes of JSON; a client
pages through it (``next_offset`` until it is ``None``) or filters by a name fragment.

>>> names = [{"name": n} for n in ("alpha", "beta", "alphabet", "gamma")]
>>> page(names, name="alpha", offset=0, limit=1)
([{'name': 'alpha'}], 2, 1)
>>> page(names, name=None, offset=3, limit=None)
([{'name': 'gamma'}], 4, None)
"""

from __future__ import annotations


def page(items: list[dict], name: str | None, offset: int, limit: int | None) -> tuple[list[dict], int, int | None]:
    """``(items on this page, total matching, offset of the next page or None)``.

    ``name`` keeps the items whose name contains it (case-insensitive); ``limit=None``
    means every matching item from ``offset`` on. Items keep their order (by name).
    """
    if name:
        needle = name.lower()
        items = [a for a in items if needle in a["name"].lower()]
    total = len(items)
    end = total if limit is None else min(total, offset + limit)
    return items[offset:end], total, (end if end < total else None)
