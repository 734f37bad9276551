"""The one place where errors become HTTP responses.

The core raises typed :class:`~adapters.errors.TaskswapError` subclasses; this module
decides their status codes, and adds the few errors that only exist over HTTP
(not ready yet, forbidden, body too large). Every error body has the same shape,
:class:`service.schemas.ErrorResponse`: ``{"error": kind, "message": ..., "problems": [...]}``.

=====================  ======  ==========================================================
error                  status  why
=====================  ======  ==========================================================
InvalidInput           400     a malformed request: empty, oversized, undecodable, wrong modality
UnfittableData         422     a fit request whose examples the trainer would refuse (one
                               class, too few for the validation split): service/fit_data.py
(schema validation)    422     the JSON/form does not match the declared request model (also
                               any pydantic model the core builds from request data)
InvalidAdapter         422     the uploaded adapter breaks the format (pickle, links, manifest)
NonFiniteOutput        422     an adapter's scores overflow to NaN/infinity (refused at
                               registration; a request that still hits it gets this, not null),
                               or a backbone's embeddings do on a request's inputs
Unsupported            422     a well-formed request this server does not do for that task
IncompatibleAdapter    409     a well-formed adapter that conflicts with what this server serves
                               (backbone fingerprint, tensor shapes, no LoRA target module)
NotFound               404     unknown task, version or store path
Conflict               409     a state change that lost a race or contradicts the state
PayloadTooLarge        413     request body over ``max_upload_bytes``
CapacityError          429     queue full; ``Retry-After`` says when to come back
Unauthorized           401     missing or wrong bearer token (``WWW-Authenticate: Bearer``)
Forbidden              403     admin endpoint without an admin token configured, or with
                               the inference token
QuotaExceeded          403     a namespace at a size quota (tasks, stored or resident bytes,
                               jobs); the message names the quota and its numbers
RateLimited            429     a namespace over its request or rows-per-second rate;
                               ``Retry-After`` says when its bucket has room
NotReady               503     backbones still loading; ``Retry-After``
AdapterUnavailable     503     a stored adapter version failed to load when this request
                               needed it (corrupt files, a backbone this replica lacks):
                               this request only; the next one retries; ``Retry-After``
PredictTimeout         504     a safety net: an answer took longer than ``predict_timeout_s``
anything else          500     logged with a traceback; never expected for bad input
=====================  ======  ==========================================================
"""

from __future__ import annotations

import logging
import math
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from adapters.redact import redact
from service.fit_data import UnfittableData
from adapters.errors import (AdapterUnavailable, CapacityError, Conflict, IncompatibleAdapter, InvalidAdapter,
                             InvalidInput, NonFiniteOutput, NotFound, QuotaExceeded, RateLimited,
                             TaskswapError, Unauthorized, Unsupported)

log = logging.getLogger("taskswap.service")


class Forbidden(Unauthorized):
    """Authenticated (or not configured) but not allowed: admin calls without admin rights."""


class PayloadTooLarge(InvalidInput):
    """The request body is over ``max_upload_bytes``, or its estimated work over a
    per-request cap (:mod:`service.request_cost`)."""


class NotReady(TaskswapError):
    """The server is still loading its backbones (or failed to)."""

    def __init__(self, message: str, retry_after_s: float = 5.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PredictTimeout(TaskswapError):
    """A prediction was not answered within ``predict_timeout_s``."""


# Most specific first: the first matching class decides.
_STATUS: list[tuple[type[TaskswapError], int, str]] = [
    (PayloadTooLarge, 413, "payload_too_large"),
    (Forbidden, 403, "forbidden"),
    (QuotaExceeded, 403, "quota_exceeded"),
    (Unauthorized, 401, "unauthorized"),
    (NotFound, 404, "not_found"),
    (NonFiniteOutput, 422, "non_finite_output"),
    (UnfittableData, 422, "unfittable_data"),
    (InvalidAdapter, 422, "invalid_adapter"),
    (Unsupported, 422, "unsupported"),
    (IncompatibleAdapter, 409, "incompatible_adapter"),
    (Conflict, 409, "conflict"),
    (InvalidInput, 400, "invalid_input"),
    (RateLimited, 429, "rate_limited"),
    (CapacityError, 429, "over_capacity"),
    (NotReady, 503, "not_ready"),
    (AdapterUnavailable, 503, "adapter_unavailable"),
    (PredictTimeout, 504, "timeout"),
]


def status_for(exc: TaskswapError) -> tuple[int, str]:
    """``(HTTP status, error kind)`` for a core or service error.

    >>> status_for(NotFound("task 'x' is not registered"))
    (404, 'not_found')
    """
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 400, "error"  # a TaskswapError subclass added later without a mapping: still a 4xx


def error_response(status: int, kind: str, message: str, problems: list[str] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    message = redact(message)  # no object address, no host path, whatever raised it
    body = {"error": kind, "message": message,
            "problems": [redact(str(p)) for p in problems] if problems else [message]}
    return JSONResponse(body, status_code=status, headers=headers)


def taskswap_error_response(exc: TaskswapError) -> JSONResponse:
    status, kind = status_for(exc)
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="taskswap"'
    if status >= 500:
        log.warning("%s: %s", kind, exc.message)
    return error_response(status, kind, exc.message, exc.problems, headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, list[str]]:
    problems = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            msg = f"request body is not valid JSON ({(e.get('ctx') or {}).get('error', 'decode error')})"
            loc = "body"
        problems.append(f"{loc}: {msg}")
    return "invalid request: " + "; ".join(problems), problems


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on ``app`` (a FastAPI app mounted in the BentoML service)."""

    @app.exception_handler(TaskswapError)
    async def _taskswap(request: Request, exc: TaskswapError):
        return taskswap_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, problems = _validation_message(exc)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "multipart/form-data") and request.method == "POST":
            hint = (f"the body was sent as {ctype or 'no content type'!r}: send Content-Type: "
                    "application/json (multipart/form-data for uploads)")
            message, problems = f"{hint}; {message}", [hint, *problems]
        return error_response(422, "validation_error", message, problems)

    @app.exception_handler(ValidationError)
    async def _pydantic(request: Request, exc: ValidationError):
        # A model the core builds from request data (e.g. a manifest with overridden
        # fields) that does not validate: still the client's data, so a 422, not a 500.
        problems = [f"{'.'.join(map(str, e['loc'])) or exc.title}: {e['msg']}" for e in exc.errors()]
        return error_response(422, "validation_error", f"invalid {exc.title}: " + "; ".join(problems),
                              problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "payload_too_large"}.get(
            exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 405:
            # Starlette answers from the first route on the path only (GET /adapters' route
            # for a PUT), so its Allow header omits the methods of the path's other routes.
            allowed = allowed_methods(app, request.scope)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        return error_response(exc.status_code, kind, message, headers=headers or None)


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """Every method some route of ``app`` accepts on the request's path (asked of the
    routes themselves, so included routers are covered too)."""
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed or ["GET"]


def internal_error_response(exc: BaseException) -> JSONResponse:
    """The last resort: log the traceback with an id, answer a JSON 500 naming that id."""
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error (incident %s)", incident, exc_info=exc)
    return error_response(500, "internal", f"internal error (incident {incident}); it is logged "
                          "on the server: please report it")
