"""``taskswap tokens``: scoped credentials on a running server (its ``/admin/tokens`` API).

    export TASKSWAP_URL=http://127.0.0.1:3000 TASKSWAP_ADMIN_TOKEN=...
    taskswap tokens create --name vision-ci --role register --namespace vision
    taskswap tokens list
    taskswap tokens rotate 3f9c0a1b2c3d4e5f
    taskswap tokens revoke 3f9c0a1b2c3d4e5f

``create`` and ``rotate`` print the new secret once (the server keeps only its hash):
store it at once. ``--json`` prints the server's answer as is. Exit codes: 0 done, 2 refused
(4xx: bad input, unknown token, no right), 1 the server could not be reached or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("tokens", help="create, list, rotate or revoke scoped tokens on a running server")
    t.add_argument("--url", default=os.environ.get("TASKSWAP_URL", "http://127.0.0.1:3000"),
                   help="server base URL (default $TASKSWAP_URL or http://127.0.0.1:3000)")
    t.add_argument("--token", default=os.environ.get("TASKSWAP_ADMIN_TOKEN"),
                   help="an admin token (default $TASKSWAP_ADMIN_TOKEN)")
    t.add_argument("--json", action="store_true", help="print the server's JSON answer")
    verbs = t.add_subparsers(dest="tokens_command", required=True)
    c = verbs.add_parser("create", help="a new token: one role over one or more namespaces")
    c.add_argument("--name", required=True, help="a label: who holds it, what for")
    c.add_argument("--role", required=True, choices=["infer", "register", "admin"])
    c.add_argument("--namespace", action="append", required=True, dest="namespaces",
                   help="a namespace the role holds in (repeatable; 'default' = bare task names; '*' = all)")
    verbs.add_parser("list", help="the tokens this admin token manages")
    for verb, what in (("rotate", "a new secret (the old one stops working)"), ("revoke", "revoke it")):
        v = verbs.add_parser(verb, help=what)
        v.add_argument("id", help="the token's id (from 'list', or the part after 'tsw_')")
    return t


def _call(args) -> httpx.Response:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        if args.tokens_command == "create":
            return client.post("/admin/tokens", json={"name": args.name, "role": args.role,
                                                      "namespaces": args.namespaces})
        if args.tokens_command == "list":
            return client.get("/admin/tokens")
        if args.tokens_command == "rotate":
            return client.post(f"/admin/tokens/{args.id}/rotate")
        return client.delete(f"/admin/tokens/{args.id}")


def _show(record: dict) -> str:
    state = "revoked" if record.get("revoked_at") else "active"
    return (f"{record['id']}\t{record['role']}\t{','.join(record['namespaces'])}\t{state}\t"
            f"{record['name']}")


def cmd_tokens(args) -> int:
    try:
        r = _call(args)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_FAILED
    try:
        body = r.json()
    except ValueError:
        body = {"message": r.text[:500]}
    if r.status_code >= 400:
        print(f"error: {r.status_code} {body.get('message', body)}", file=sys.stderr)
        return EXIT_BAD_INPUT if r.status_code < 500 else EXIT_FAILED
    if args.json:
        print(json.dumps(body, indent=2))
    elif args.tokens_command == "list":
        print("id\trole\tnamespaces\tstate\tname")
        for record in body["tokens"]:
            print(_show(record))
    else:
        print(_show(body))
        if "token" in body:
            print(f"token (shown once, store it now): {body['token']}")
    return 0
