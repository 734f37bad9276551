"""Small ASGI middlewares: three around the mounted HTTP app, one around BentoML's app.

- :class:`BodyLimit` counts request body bytes as they arrive (not trusting
  ``Content-Length`` alone, so a chunked upload is capped too) and answers 413 past
  the limit.
- :class:`LastResort` turns an unexpected exception into a logged JSON 500 instead of a
  bare text page; bad input must never get here (tests check it does not).
- :class:`JsonNotFound` gives BentoML's own plain-text 404 our JSON error shape.
- :class:`ReplicaHeader` names the answering replica in ``X-Taskswap-Replica`` on every
  response (installed around BentoML's whole app: ``/readyz``, ``/metrics``, 404s too), so a
  client (or a test) behind a load balancer knows who served it.
- :class:`HeadAsGet` answers ``HEAD`` wherever ``GET`` is answered (headers, no body).
- :class:`ReadTimeout` cuts off a request whose body has not fully arrived within
  ``timeout()`` seconds (408), so a slow client cannot hold a worker thread forever.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import (PayloadTooLarge, error_response, internal_error_response,
                            taskswap_error_response)


class BodyLimit:
    """Refuse request bodies over ``limit()`` bytes with 413 (``limit`` read per request)."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(limit)(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException, so FastAPI's own body parsing re-raises it as is
                    # (it turns any other exception into a generic 400).
                    raise HTTPException(413, _too_large_error(limit).message)
            return message

        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except HTTPException as exc:  # only if it escaped the app's own handlers
            if started or exc.status_code != 413:
                raise
            await _too_large(limit)(scope, receive, send)


def _too_large_error(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {limit} bytes (TASKSWAP_MAX_UPLOAD_BYTES)")


def _too_large(limit: int):
    return taskswap_error_response(_too_large_error(limit))


class ReplicaHeader:
    """Add ``X-Taskswap-Replica: <replica id>`` to every HTTP response."""

    def __init__(self, app: ASGIApp, replica_id: Callable[[], str]):
        self.app = app
        self.replica_id = replica_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = (b"x-taskswap-replica", self.replica_id().encode("latin-1", "replace"))

        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, labelled)


class HeadAsGet:
    """Serve ``HEAD`` as ``GET`` without the body (RFC 9110: HEAD is GET without content)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            return await self.app(scope, receive, send)

        async def no_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, no_body)


class ReadTimeout:
    """408 when a request body is still incomplete ``timeout()`` seconds after the request
    began: a slowloris body holds nothing for longer, and other clients are served meanwhile."""

    def __init__(self, app: ASGIApp, timeout: Callable[[], float]):
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.timeout()
        deadline = asyncio.get_running_loop().time() + limit
        done = False

        async def timed() -> Message:
            nonlocal done
            if done:  # the body is complete: later receives wait for a disconnect, unbounded
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {limit:g} s "
                                         "(TASKSWAP_READ_TIMEOUT_S); send it at once") from None
            if message["type"] != "http.request" or not message.get("more_body"):
                done = True
            return message

        await self.app(scope, timed, send)


class LastResort:
    """Log and answer JSON 500 for any exception that escaped the error handlers."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if started:
                raise
            await internal_error_response(exc)(scope, receive, send)


class JsonNotFound:
    """Installed on the whole BentoML app: its own 404 page (a path no route matches, e.g. a
    task name with a newline or a '/') is plain text; send our JSON error body instead, so
    every error this server returns has the documented shape."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}

        async def rewriting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                if message["status"] == 404 and ctype.startswith(b"text/plain"):
                    held["start"] = message  # replaced once the body has gone by
                    return
            elif held and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                path = scope.get("path", "")
                kept = [(k, v) for k, v in held["start"].get("headers", []) if k.startswith(b"x-taskswap")]

                async def with_kept(m: Message) -> None:
                    if m["type"] == "http.response.start":
                        m = {**m, "headers": [*m.get("headers", []), *kept]}
                    await send(m)
                return await _not_found(f"no endpoint {scope.get('method', '')} {path[:200]!r}; see "
                                        "/docs.json for the API")(scope, receive, with_kept)
            await send(message)

        await self.app(scope, receive, rewriting_send)


def _not_found(message: str):
    return error_response(404, "not_found", message)
