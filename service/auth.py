"""Bearer tokens, two scopes.

- ``admin`` (register, activate, delete, pin): needs ``TASKSWAP_ADMIN_TOKEN``. With no
  admin token configured these endpoints are refused (403), never open.
- ``read`` (predict, list, show, backbones): open unless ``TASKSWAP_INFERENCE_TOKEN``
  is set; then either token is accepted (the admin token is a superset).
- ``open``: the Open Inference Protocol's server health (``GET /v2/health/live`` and
  ``/ready``), like BentoML's ``/livez`` and ``/readyz``: KServe and Triton probes send no
  token, and these answer a bare ``{"live"|"ready": bool}``. Model metadata and inference
  stay ``read``.

Tokens are compared with :func:`hmac.compare_digest`, always against every configured
token, so timing says nothing about which one (or how much of one) matched.
"""

from __future__ import annotations

import hmac
import re
from typing import Callable, Literal

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Send

from adapters.errors import Unauthorized
from service.errors import Forbidden, taskswap_error_response

Scope = Literal["admin", "read", "open"]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent.

    >>> bearer_token("Bearer abc")
    'abc'
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _same(given: str, secret: SecretStr | None) -> bool:
    if secret is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), secret.get_secret_value().encode("utf-8"))


class Auth:
    """``Auth(admin_token, inference_token).require("admin", request_header)``."""

    def __init__(self, admin_token: SecretStr | None, inference_token: SecretStr | None):
        self.admin_token = admin_token
        self.inference_token = inference_token

    def require(self, scope: Scope, authorization: str | None) -> None:
        """Return if the header grants ``scope``; raise Unauthorized (401) / Forbidden (403)."""
        if scope == "open":
            return
        if scope == "admin" and self.admin_token is None:
            raise Forbidden("admin endpoints are disabled because no admin token is configured: "
                            "set TASKSWAP_ADMIN_TOKEN (scripts/serve.sh generates one into "
                            "var/admin-token) and send 'Authorization: Bearer <token>'")
        if scope == "read" and self.inference_token is None:
            return
        token = bearer_token(authorization)
        if token is None:
            which = "admin" if scope == "admin" else "inference (or admin)"
            raise Unauthorized(f"missing bearer token: send 'Authorization: Bearer <{which} token>'")
        is_admin = _same(token, self.admin_token)
        is_inference = _same(token, self.inference_token)
        if is_admin or (scope == "read" and is_inference):
            return
        if is_inference:
            raise Forbidden("the inference token cannot change adapters; use the admin token")
        raise Unauthorized("wrong bearer token")


# Which routes need the admin scope, which need none; every other route of the mounted app
# needs "read". Checked by AuthGuard before the body is read, so an unauthenticated upload
# costs nothing.
_ADMIN_ROUTES = [
    ("POST", re.compile(r"^/adapters/?$")),
    ("POST", re.compile(r"^/adapters/[^/]+/(activate|pin|fit|adapt|rollout|promote)/?$")),
    ("DELETE", re.compile(r"^/adapters/[^/]+(/rollout)?/?$")),
    ("GET", re.compile(r"^/jobs(/.*)?$")),  # job records carry training metrics
    *((m, re.compile(r"^/admin/namespaces/[^/]+/quota/?$")) for m in ("GET", "PUT", "DELETE")),
]
_OPEN_ROUTES = [("GET", re.compile(r"^/v2/health/(live|ready)/?$"))]  # probes, like /livez, /readyz


def scope_for(method: str, path: str) -> Scope:
    """The scope a request needs.

    >>> scope_for("DELETE", "/adapters/sentiment"), scope_for("GET", "/adapters/sentiment")
    ('admin', 'read')
    >>> scope_for("GET", "/v2/health/ready"), scope_for("GET", "/v2/models/sentiment")
    ('open', 'read')
    """
    for m, pattern in _OPEN_ROUTES:
        if method == m and pattern.match(path):
            return "open"
    for m, pattern in _ADMIN_ROUTES:
        if method == m and pattern.match(path):
            return "admin"
    return "read"


class AuthGuard:
    """ASGI middleware: ``auth().require(scope_for(method, path), header)`` before the route."""

    def __init__(self, app: ASGIApp, auth: Callable[[], Auth]):
        self.app = app
        self.auth = auth

    async def __call__(self, scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization")
            try:
                self.auth().require(scope_for(scope["method"], scope["path"]),
                                    header.decode("latin-1") if header is not None else None)
            except Unauthorized as exc:
                return await taskswap_error_response(exc)(scope, receive, send)
        await self.app(scope, receive, send)
