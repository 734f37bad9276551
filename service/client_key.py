"""Who is asking: the key the batch worker's fair queue shares work by.

A client is its bearer token (hashed: the key may appear in logs and metrics, the token
never) together with its peer address, so callers sharing one inference token from
different hosts are different clients, and a caller with no token is its address. The key
is set by the :class:`ClientKey` middleware for the request's context and read by the
engine when it queues the request's work (:mod:`adapters.fair_queue`); code that runs
outside a request (a registration's dry run) is the empty key. Behind a proxy every
caller shares the proxy's address: send a token per caller there. Namespaces will key it
too once they exist.

>>> key_for({"headers": [(b"authorization", b"Bearer abc")], "client": ("10.0.0.7", 5555)})
'token:ba7816bf8f01cfea@10.0.0.7'
>>> key_for({"headers": [], "client": ("10.0.0.7", 5555)})
'peer:10.0.0.7'
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

CLIENT: ContextVar[str] = ContextVar("taskswap_client", default="")


def key_for(scope: Scope) -> str:
    """The client key of an ASGI request ``scope`` (port left out: one client opens many
    connections)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    header = dict(scope.get("headers") or []).get(b"authorization", b"")
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return f"token:{hashlib.sha256(token.strip().encode()).hexdigest()[:16]}@{peer}"
    return f"peer:{peer}"


class ClientKey:
    """ASGI middleware: :data:`CLIENT` holds the request's :func:`key_for` while it runs."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = CLIENT.set(key_for(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT.reset(token)
