"""``taskswap quota get|set|clear NAMESPACE``: a namespace's quota on a running server.

    taskswap quota get default
    taskswap quota set team-a --max-tasks 50 --max-stored-bytes 2e9 --requests-per-s 20 --weight 2 \\
        --max-inflight 8
    taskswap quota clear team-a

It calls ``/admin/namespaces/{namespace}/quota`` with the admin token (``--token``, default
``$TASKSWAP_ADMIN_TOKEN``) and prints the server's JSON answer: the quota in force and the
namespace's usage. ``set`` replaces the whole quota: an option left out is no limit.
Its own file beside :mod:`training.cli`; it imports no model code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx

# option -> (quota field, type); sizes take a float so 2e9 works
FIELDS = {"max-tasks": ("max_tasks", int), "max-stored-bytes": ("max_stored_bytes", float),
          "max-resident-bytes": ("max_resident_bytes", float), "max-jobs": ("max_jobs", int),
          "max-inflight": ("max_inflight", int),
          "requests-per-s": ("requests_per_s", float), "rows-per-s": ("rows_per_s", float),
          "burst-s": ("burst_s", float), "weight": ("weight", float)}
_INTEGRAL = {"max_tasks", "max_stored_bytes", "max_resident_bytes", "max_jobs", "max_inflight"}


def add_parser(sub, default_url: str) -> argparse.ArgumentParser:
    q = sub.add_parser("quota", help="read, set or clear a namespace's quota on a running server (admin)")
    qs = q.add_subparsers(dest="quota_command", required=True)
    for name, text in (("get", "the namespace's quota and usage"),
                       ("set", "replace the namespace's quota (options left out: no limit)"),
                       ("clear", "remove the namespace's quota (no limits, weight 1)")):
        p = qs.add_parser(name, help=text)
        p.add_argument("namespace", help="'default' for the unqualified task names")
        p.add_argument("--url", default=default_url,
                       help="server base URL (default $TASKSWAP_URL or http://127.0.0.1:3000)")
        p.add_argument("--token", help="admin token (default $TASKSWAP_ADMIN_TOKEN)")
        if name == "set":
            for option, (_, kind) in FIELDS.items():
                p.add_argument(f"--{option}", type=kind, dest=option.replace("-", "_"))
    return q


def body_of(args) -> dict:
    """The PUT body from ``set``'s options (sizes as whole bytes).

    >>> body_of(argparse.Namespace(max_tasks=3, max_stored_bytes=2e9, max_resident_bytes=None,
    ...         max_jobs=None, max_inflight=None, requests_per_s=None, rows_per_s=None, burst_s=None, weight=2.0))
    {'max_tasks': 3, 'max_stored_bytes': 2000000000, 'weight': 2.0}
    """
    body = {}
    for field, _ in FIELDS.values():
        value = getattr(args, field)
        if value is not None:
            body[field] = int(value) if field in _INTEGRAL and float(value).is_integer() else value
    return body


def cmd_quota(args) -> int:
    token = args.token or os.environ.get("TASKSWAP_ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = f"/admin/namespaces/{args.namespace}/quota"
    method, body = {"get": ("GET", None), "set": ("PUT", None), "clear": ("DELETE", None)}[args.quota_command]
    if args.quota_command == "set":
        body = body_of(args)
    try:
        with httpx.Client(base_url=args.url, timeout=60, headers=headers) as c:
            r = c.request(method, path, json=body)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if r.status_code != 200:
        try:
            message = r.json().get("message", r.text)
        except ValueError:
            message = r.text
        print(f"error: {r.status_code}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(r.json(), indent=2))
    return 0
