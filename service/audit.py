"""The audit log: one create-once store document per admin action, never rewritten.

Key ``audit/<UTC time, 20 digits>-<8 random hex>`` (``meta/audit/...json``): the keys sort
by time, and two replicas writing in the same microsecond still write two records. A
record::

    {"at": "2026-12-07T17:40:01.123456+00:00", "who": "bootstrap-admin" | <token id>,
     "what": "register", "namespace": "vision", "task": "vision/defects",
     "before": <version or None>, "after": <version or None>, "detail": {...}}

:func:`record` is the one way in (every admin route calls it after its change succeeded);
:func:`read` pages through it for ``GET /admin/audit``.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timezone

from adapters.errors import InvalidInput
from adapters.namespaces import namespace_of
from adapters.store.base import AdapterStore

log = logging.getLogger("taskswap.audit")
ACTIONS = ("register", "activate", "delete", "pin", "rollout_set", "rollout_clear", "promote", "fit",
           "adapt", "token_create", "token_rotate", "token_revoke", "shared_set_activate", "shared_set_register")


def _key_time(t: datetime) -> str:
    """20 digits that sort as the UTC times do (strftime's %Y does not pad years below 1000)."""
    t = t.astimezone(timezone.utc)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}{t.microsecond:06d}"


def record(store: AdapterStore, who: str, what: str, task: str | None = None,
           namespace: str | None = None, before: str | None = None, after: str | None = None,
           detail: dict | None = None) -> dict:
    """Append one record; returns it. ``namespace`` defaults to the task's.

    A store that refuses the write (read-only credentials) loses the record and says so in
    the log; the action itself already happened, so it is not undone.
    """
    now = datetime.now(timezone.utc)
    doc = {"at": now.isoformat(), "who": who, "what": what,
           "namespace": namespace if namespace is not None else (namespace_of(task) if task else None),
           "task": task, "before": before, "after": after, "detail": detail or {}}
    key = f"audit/{_key_time(now)}-{secrets.token_hex(4)}"
    try:
        store.create_document(key, doc)
    except Exception:  # noqa: BLE001 - the action succeeded; a lost record is logged, not raised
        log.exception("audit record %s (%s by %s) could not be written", key, what, who)
    return {"id": key.partition("/")[2], **doc}


def since_key(since: str) -> str:
    """The first key at or after an ISO-8601 time (``2026-12-07`` or with a time and zone).

    >>> since_key("2026-12-07T17:00:00+00:00")
    '20261207170000000000'
    """
    try:
        t = datetime.fromisoformat(since)
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return _key_time(t)
    except (ValueError, OverflowError) as exc:  # not a time; or one that leaves the calendar in UTC
        raise InvalidInput(f"since {since[:40]!r} is not an ISO-8601 time: use e.g. "
                           "'2026-12-07' or '2026-12-07T17:00:00Z'") from exc


def read(store: AdapterStore, readable, namespace: str | None = None, since: str | None = None,
         after: str | None = None, limit: int = 100) -> tuple[list[dict], str | None]:
    """``(records oldest first, the cursor for the next page or None)``: records of
    namespaces ``readable(namespace)`` accepts (a record with none: only when it accepts
    ``"*"``), filtered by ``namespace`` and ``since``, after the cursor ``after``."""
    if after is not None and not re.fullmatch(r"[0-9]{20}-[0-9a-f]{8}", after):
        raise InvalidInput(f"after {after[:40]!r} is not a cursor this API returned (next_after)")
    start = since_key(since) if since else ""
    keys = [k for k in store.list_documents("audit")
            if k.partition("/")[2] >= start and (after is None or k.partition("/")[2] > after)]
    out: list[dict] = []
    for i, key in enumerate(keys):
        doc = store.get_document(key)
        if doc is None:
            continue
        ns = doc.get("namespace")
        if not readable(ns if ns is not None else "*") or (namespace is not None and ns != namespace):
            continue
        out.append({"id": key.partition("/")[2], **doc})
        if len(out) == limit:
            more = i + 1 < len(keys)
            return out, (out[-1]["id"] if more else None)
    return out, None
