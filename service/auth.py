"""Bearer tokens: who is calling (a :class:`~service.access.Principal`), checked before the body.

Three kinds of token:

- the bootstrap ``TASKSWAP_ADMIN_TOKEN``: role ``admin`` over every namespace;
- the bootstrap ``TASKSWAP_INFERENCE_TOKEN``: role ``infer`` over every namespace;
- scoped tokens ``tsw_<id>_<secret>`` (:mod:`service.tokens`): one role over some
  namespaces, created through ``/admin/tokens``, kept as salted hashes in the store;
- JWTs from an identity provider, when a key is configured (:mod:`service.jwt_auth`): the
  same grant, from a claim.

Each route needs a role (:func:`rule_for`, a table), and for a route naming a task in its
path, that role in the task's namespace (:meth:`Principal.check`: 403 when the caller can
read the namespace, the 404 of a missing task when it cannot). Routes whose names sit in
the body check them once parsed (:func:`service.access.check`). The scopes of before stay:

- ``admin`` (register, activate, delete, pin, fit, rollouts, jobs, ``/admin/...``): needs a
  token. With no admin token configured and no valid scoped token sent, these endpoints
  are refused (403), never open.
- ``read`` (predict, list, show, backbones): open unless ``TASKSWAP_INFERENCE_TOKEN``
  is set (then every caller is ``anonymous``, role ``infer`` everywhere); once it is set,
  every read needs a token, and a scoped one reads only its namespaces.
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

import anyio

from adapters.errors import TaskswapError, Unauthorized
from service.access import ANONYMOUS, BOOTSTRAP_ADMIN, BOOTSTRAP_INFERENCE, CURRENT, ROLES, Principal
from service.errors import Forbidden, taskswap_error_response
from service.jwt_auth import JwtVerifier, looks_like_jwt
from service.tokens import TokenBook, looks_scoped

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
    """``Auth(admin_token, inference_token).require("admin", request_header)`` → a Principal.

    Scoped tokens are read from the store once :meth:`attach` gave a :class:`TokenBook`
    (the worker does when its engine is built); before that only the bootstrap tokens work.
    """

    def __init__(self, admin_token: SecretStr | None, inference_token: SecretStr | None,
                 book: Callable[[], TokenBook | None] = lambda: None, jwt: JwtVerifier | None = None):
        self.admin_token = admin_token
        self.inference_token = inference_token
        self._book = book
        self.jwt = jwt

    def attach(self, book: Callable[[], TokenBook | None]) -> None:
        """Where scoped tokens are read: the worker's engine, once it opened the store."""
        self._book = book

    @property
    def book(self) -> TokenBook | None:
        return self._book()

    def needs_io(self, authorization: str | None) -> bool:
        """True when :meth:`require` may read the store or hash (run it off the event loop)."""
        try:
            token = bearer_token(authorization)
        except Unauthorized:
            return False
        book = self.book
        return token is not None and book is not None and looks_scoped(token) and not book.cached(token)

    def _scoped(self, token: str) -> Principal | None:
        if self.jwt is not None and looks_like_jwt(token):
            return self.jwt.principal(token)
        book = self.book
        return book.principal(token) if book is not None and looks_scoped(token) else None

    def require(self, scope: Scope, authorization: str | None) -> Principal:
        """The caller if the header grants ``scope``; raise Unauthorized (401) / Forbidden (403)."""
        if scope == "open":
            return ANONYMOUS
        if scope == "read" and self.inference_token is None:
            return ANONYMOUS
        disabled = Forbidden("admin endpoints are disabled because no admin token is configured: "
                             "set TASKSWAP_ADMIN_TOKEN (scripts/serve.sh generates one into "
                             "var/admin-token) and send 'Authorization: Bearer <token>'")
        token = bearer_token(authorization)
        if token is None:
            if scope == "admin" and self.admin_token is None:
                raise disabled
            which = "admin" if scope == "admin" else "inference (or admin)"
            raise Unauthorized(f"missing bearer token: send 'Authorization: Bearer <{which} token>'")
        is_admin = _same(token, self.admin_token)
        is_inference = _same(token, self.inference_token)
        if is_admin:
            return BOOTSTRAP_ADMIN
        scoped = self._scoped(token)
        if scoped is not None:
            return scoped
        if scope == "admin" and self.admin_token is None:
            raise disabled
        if scope == "read" and is_inference:
            return BOOTSTRAP_INFERENCE
        if is_inference:
            raise Forbidden("the inference token cannot change adapters; use the admin token")
        raise Unauthorized("wrong bearer token")


# Which role each route needs, and where its task name is (a named group). The first match
# decides; a route not listed needs "infer" (its task names, if any, are in the body and
# checked there). ``/admin/...`` is admin-only by default: a new admin route needs no line.
# Checked by AuthGuard before the body is read, so an unauthenticated upload costs nothing.
_N = r"(?P<name>[^/]+(?:/[^/]+)?)"  # a task name, bare or 'namespace/task'
_RULES: list[tuple[str, re.Pattern, str | None]] = [
    ("GET", re.compile(r"^/v2/health/(live|ready)/?$"), None),  # probes, like /livez, /readyz
    ("*", re.compile(r"^/admin(/.*)?$"), "admin"),
    ("POST", re.compile(r"^/adapters/?$"), "register"),  # the name is in the upload
    ("POST", re.compile(rf"^/adapters/{_N}/(activate|pin|fit|adapt|rollout|promote)/?$"), "register"),
    ("DELETE", re.compile(rf"^/adapters/{_N}/rollout/?$"), "register"),
    ("DELETE", re.compile(rf"^/adapters/{_N}/?$"), "register"),
    ("POST", re.compile(rf"^/shared-sets/{_N}/activate/?$"), "register"),  # and on its tasks: the engine
    ("POST", re.compile(r"^/shared-sets/?$"), "register"),  # the names are in the upload
    ("GET", re.compile(rf"^/shared-sets/{_N}/?$"), "infer"),
    ("GET", re.compile(r"^/jobs(/.*)?$"), "register"),  # job records carry training metrics
    ("GET", re.compile(rf"^/adapters/{_N}/rollout/?$"), "infer"),
    ("GET", re.compile(rf"^/adapters/{_N}/?$"), "infer"),
    ("*", re.compile(rf"^/v2/models/{_N}/versions/[^/]+(/ready|/infer)?/?$"), "infer"),
    ("*", re.compile(rf"^/v2/models/{_N}(/ready|/infer)/?$"), "infer"),
    ("*", re.compile(rf"^/v2/models/{_N}/?$"), "infer"),
]


def rule_for(method: str, path: str) -> tuple[str | None, str | None]:
    """``(role needed or None for an open route, task name in the path or None)``.

    >>> rule_for("POST", "/adapters/team/task/activate"), rule_for("GET", "/adapters/team/rollout")
    (('register', 'team/task'), ('infer', 'team'))
    >>> rule_for("GET", "/v2/health/ready"), rule_for("POST", "/predict")
    ((None, None), ('infer', None))
    """
    for m, pattern, role in _RULES:
        if m in (method, "*"):
            hit = pattern.match(path)
            if hit:
                return role, hit.groupdict().get("name")
    return "infer", None


def scope_for(method: str, path: str) -> Scope:
    """The token scope a request needs: ``open`` (no token), ``read`` (role infer) or
    ``admin`` (a role that changes things).

    >>> scope_for("DELETE", "/adapters/sentiment"), scope_for("GET", "/adapters/sentiment")
    ('admin', 'read')
    >>> scope_for("GET", "/v2/health/ready"), scope_for("GET", "/v2/models/sentiment")
    ('open', 'read')
    """
    role = rule_for(method, path)[0]
    return "open" if role is None else "read" if role == "infer" else "admin"


def authorize(principal: Principal, role: str | None, name: str | None) -> None:
    """``role`` on the task ``name``'s namespace, or (no name) anywhere at all."""
    if role is None:
        return
    if name is not None:
        principal.check(role, name)
    elif ROLES.index(principal.role) < ROLES.index(role):
        raise Forbidden(f"this token ({principal.id}) has role {principal.role!r}; this route needs "
                        f"{role!r}: use a token with that role")


class AuthGuard:
    """ASGI middleware: authenticate, authorize the path's task, set the request's principal
    (:data:`service.access.CURRENT`), all before the route reads the body."""

    def __init__(self, app: ASGIApp, auth: Callable[[], Auth]):
        self.app = app
        self.auth = auth

    async def __call__(self, scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization")
            value = header.decode("latin-1") if header is not None else None
            role, name = rule_for(scope["method"], scope["path"])
            need = "open" if role is None else "read" if role == "infer" else "admin"
            auth = self.auth()
            try:
                if auth.needs_io(value):  # a store read or a hash: not on the event loop
                    principal = await anyio.to_thread.run_sync(auth.require, need, value)
                else:
                    principal = auth.require(need, value)
                authorize(principal, role, name)
            except TaskswapError as exc:
                return await taskswap_error_response(exc)(scope, receive, send)
            CURRENT.set(principal)
        await self.app(scope, receive, send)
