"""``/metrics`` behind a scrape token when one is configured (``TASKSWAP_METRICS_TOKEN``).

BentoML serves ``/metrics`` itself, outside the mounted app and its auth guard; the
per-namespace series there name namespaces and tasks. With the setting, a scrape without
``Authorization: Bearer <token>`` (or with another token) gets the same 404 body as a path
that does not exist, so a caller never learns the route is there (the rule of every other
route, docs/tenancy.md). Without the setting, ``/metrics`` stays open as before (a
cluster-internal scrape). Installed around BentoML's whole app.
"""

from __future__ import annotations

import hmac
from typing import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response

PATH = "/metrics"


class MetricsGuard:
    def __init__(self, app: ASGIApp, token: Callable[[], str | None]):
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") != PATH:
            return await self.app(scope, receive, send)
        want = self.token()
        if want is not None and not allowed(dict(scope.get("headers") or []).get(b"authorization", b""), want):
            message = f"no endpoint {scope.get('method', '')} {scope.get('path', '')[:200]!r}; see /docs.json for the API"
            return await error_response(404, "not_found", message)(scope, receive, send)
        return await self.app(scope, receive, send)


def allowed(header: bytes, token: str) -> bool:
    """``Authorization`` header value ``header`` carries ``token`` (constant-time compare).

    >>> allowed(b"Bearer s3cret-s3cret-s3cret", "s3cret-s3cret-s3cret"), allowed(b"Bearer x", "s3cret")
    (True, False)
    """
    scheme, _, value = header.decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
