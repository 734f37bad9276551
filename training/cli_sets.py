"""``taskswap sets``: shared adaptations and the tasks riding on them, switched as one set
(docs/multitask.md), on a running server through the typed client.

    export TASKSWAP_URL=http://127.0.0.1:3000 TASKSWAP_TOKEN=...
    taskswap sets list
    taskswap sets show reviews-base
    taskswap sets register runs/base-v2 --head runs/topic-v2
    taskswap sets activate reviews-base 3f2a9c1e
    taskswap sets rollback reviews-base

``list`` and ``show`` need an inference token, the others a ``register`` token over the
adaptation and every task riding on it (``--token``, default ``$TASKSWAP_TOKEN``, else
``$TASKSWAP_ADMIN_TOKEN``). ``register`` takes folders (zipped here) or archives. ``--json``
prints the server's answer as is. Exit codes: 0 done, 2 refused (4xx: bad input, unknown
set, a switch in progress, no right), 1 the server could not be reached or failed.
Its own file beside :mod:`training.cli`; it imports no model code.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

from taskswap_client import Client, SharedSetInfo, SharedSetList, TaskswapHTTPError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def add_parser(sub, default_url: str) -> argparse.ArgumentParser:
    s = sub.add_parser("sets", help="list, show, register, activate or roll back a shared adaptation's set")
    s.add_argument("--url", default=default_url,
                   help="server base URL (default $TASKSWAP_URL or http://127.0.0.1:3000)")
    s.add_argument("--token", help="a token (default $TASKSWAP_TOKEN, else $TASKSWAP_ADMIN_TOKEN)")
    s.add_argument("--json", action="store_true", help="print the server's JSON answer")
    verbs = s.add_subparsers(dest="sets_command", required=True)
    verbs.add_parser("list", help="every shared adaptation you can read, with its active set")
    v = verbs.add_parser("show", help="one set: active, previous, pending and every version")
    v.add_argument("name", help="the shared adaptation's name (team/name in a namespace)")
    r = verbs.add_parser("register", help="a new version of a shared adaptation and of every task on it, as one set")
    r.add_argument("adaptation", help="the adaptation's new version: a folder or a zip/tar.gz archive")
    r.add_argument("--head", action="append", default=[], dest="heads",
                   help="a task riding on it with a new head: folder or archive (repeatable); "
                        "the other tasks carry their head over")
    a = verbs.add_parser("activate", help="switch to the set of one adaptation version (all or none)")
    a.add_argument("name")
    a.add_argument("version", help="the adaptation's version: sha256 or a unique prefix of 8+ hex characters")
    b = verbs.add_parser("rollback", help="switch back to the previous set")
    b.add_argument("name")
    return s


def _call(client: Client, args) -> SharedSetInfo | SharedSetList:
    verb = args.sets_command
    if verb == "list":
        return client.shared_sets()
    if verb == "show":
        return client.shared_set(args.name)
    if verb == "register":
        return client.register_shared_set(args.adaptation, args.heads)
    return client.activate_shared_set(args.name, args.version if verb == "activate" else None)


def describe(answer: SharedSetInfo | SharedSetList) -> str:
    """The answer as lines of text: one per set for a list; a set's record and versions.

    >>> from taskswap_client.models import SetState
    >>> describe(SharedSetList(sets=[{"name": "base", "active": SetState(adaptation="ab" * 32,
    ...          tasks={"sentiment": "cd" * 32})}]))
    'base\\tabababababab\\tsentiment@cdcdcdcdcdcd'
    """
    if isinstance(answer, SharedSetList):
        return "\n".join(f"{s.name}\t{s.active.adaptation[:12]}\t{_tasks(s.active.tasks)}" for s in answer.sets)
    lines = [f"{answer.name}: active {answer.active.adaptation[:12]} {_tasks(answer.active.tasks)}"]
    for what, state in (("previous", answer.previous), ("pending", answer.pending)):
        if state is not None:
            lines.append(f"  {what} {state.adaptation[:12]} {_tasks(state.tasks)}")
    for v in answer.versions:
        lines.append(f"  {'*' if v.active else ' '} {v.version[:12]}\t{v.created_at}\t{_tasks(v.tasks)}")
    return "\n".join(lines)


def _tasks(tasks: dict[str, str]) -> str:
    return " ".join(f"{t}@{v[:12]}" for t, v in sorted(tasks.items())) or "(no tasks)"


def cmd_sets(args) -> int:
    token = args.token or os.environ.get("TASKSWAP_TOKEN") or os.environ.get("TASKSWAP_ADMIN_TOKEN")
    try:
        with Client(args.url, token=token) as client:
            answer = _call(client, args)
    except TaskswapHTTPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if 400 <= exc.status < 500 else EXIT_FAILED
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as exc:  # a folder or archive that cannot be read, a link inside
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(answer.model_dump_json(indent=2) if args.json else describe(answer))
    return 0
