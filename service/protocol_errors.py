"""Errors in each protocol's own shape, whoever raised them.

Everything in the app answers errors as :class:`service.schemas.ErrorResponse`
(``{"error": kind, "message": ..., "problems": [...]}``), from the one mapping in
:mod:`service.errors`. Clients of the standard protocols expect their own shape:

- Open Inference Protocol (``/v2/...``): ``{"error": "<message>"}``;
- OpenAI (``/v1/...``): ``{"error": {"message", "type", "param", "code"}}``;
- TGI / LoRAX (``/generate``, ``/generate_stream``): ``{"error": "<message>", "error_type": kind}``.

This middleware sits outermost, so auth (401/403), body-limit (413), validation (422)
and route errors are all rewritten the same way; status codes and headers
(``Retry-After``, ``WWW-Authenticate``) are kept.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.schemas import ERROR_RESPONSES


class V2Error(BaseModel):
    """Open Inference Protocol error body."""

    error: str = Field(description="What is wrong and how to fix it.")


class TGIError(BaseModel):
    """TGI / LoRAX error body."""

    error: str = Field(description="What is wrong and how to fix it.")
    error_type: str = Field(description="Error kind, e.g. 'invalid_input', 'capacity'.")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="Error kind, e.g. 'invalid_input', 'not_found'.")
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI-style error body."""

    error: OpenAIErrorDetail


def _v2(body: dict) -> dict:
    return {"error": body["message"]}


def _openai(body: dict) -> dict:
    return {"error": {"message": body["message"], "type": body["error"], "param": None,
                      "code": body["error"]}}


def _tgi(body: dict) -> dict:
    return {"error": body["message"], "error_type": body["error"]}


_SHAPES = (("/v2/", _v2), ("/v2", _v2), ("/v1/", _openai), ("/generate", _tgi))
_ROOT = "/"  # TGI / LoRAX's compatibility route: its errors in TGI's shape too


def _shape_for(path: str):
    for prefix, shape in _SHAPES:
        if path == prefix or path.startswith(prefix):
            return shape
    return _tgi if path == _ROOT else None


def error_responses(model: type[BaseModel]) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for a protocol route (every status the shared mapping can give)."""
    return {code: {**spec, "model": model} for code, spec in ERROR_RESPONSES.items()}


class ProtocolErrors:
    """ASGI middleware: rewrite JSON error bodies under ``/v1/`` and ``/v2`` to the protocol's shape."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        shape = _shape_for(scope.get("path", "")) if scope["type"] == "http" else None
        if shape is None:
            return await self.app(scope, receive, send)
        held: dict = {}

        async def rewriting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                if message["status"] >= 400 and ctype.startswith(b"application/json"):
                    held["start"], held["body"] = message, b""
                    return
            elif held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                body = _rewrite(held["body"], shape)
                start = held["start"]
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                return await send({"type": "http.response.body", "body": body})
            await send(message)

        await self.app(scope, receive, rewriting_send)


def _rewrite(raw: bytes, shape) -> bytes:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    if not (isinstance(body, dict) and isinstance(body.get("error"), str)
            and isinstance(body.get("message"), str)):
        return raw  # not ours (already in a protocol's shape)
    return json.dumps(shape(body)).encode()
