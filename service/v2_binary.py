"""Triton's binary tensor data extension, turned into the plain JSON request on the way in.

``tritonclient`` sends tensors as raw bytes after the JSON header by default
(``Inference-Header-Content-Length: <json bytes>``; each input with
``parameters.binary_data_size``; a ``BYTES`` tensor is a sequence of 4-byte
little-endian lengths, each followed by that many bytes). This middleware rebuilds the
JSON request the routes of :mod:`service.routes_v2` read (and a request without the
extension is read as JSON whatever its ``Content-Type``): ``BYTES`` elements become
base64 strings marked ``parameters.content_encoding = "base64"`` (an image's raw file
bytes, or UTF-8 text), numeric tensors become lists. Answers are always JSON, which the
protocol's clients read whatever they asked for. It sits inside :class:`BodyLimit`, so
the body it buffers is already capped.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.errors import InvalidInput
from service.errors import taskswap_error_response

_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer/?$")
_HEADER = b"inference-header-content-length"
_NUMPY = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
          "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
          "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


def to_json_request(raw: bytes, json_size: int) -> bytes:
    """A binary-extension request body -> the equivalent JSON request body.

    >>> body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
    ...                               "parameters": {"binary_data_size": 6}}]}).encode()
    >>> json.loads(to_json_request(body + b"\\x02\\x00\\x00\\x00hi", len(body)))["inputs"][0]["data"]
    ['aGk=']
    """
    if not 0 < json_size <= len(raw):
        raise InvalidInput(f"Inference-Header-Content-Length {json_size} is outside the body "
                           f"({len(raw)} bytes)")
    try:
        header = json.loads(raw[:json_size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the JSON header of the binary request does not parse ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("the JSON header of the binary request has no 'inputs' list")
    pos = json_size
    for i, inp in enumerate(header["inputs"]):
        params = inp.get("parameters") if isinstance(inp, dict) else None
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        size = params.pop("binary_data_size")
        if not isinstance(size, int) or size < 0 or pos + size > len(raw):
            raise InvalidInput(f"inputs[{i}].parameters.binary_data_size {size!r} runs past the body")
        chunk, pos = raw[pos:pos + size], pos + size
        datatype = inp.get("datatype")
        if datatype == "BYTES":
            inp["data"] = [base64.b64encode(e).decode() for e in _bytes_elements(chunk, i)]
            params["content_encoding"] = "base64"
        elif datatype in _NUMPY and size % np.dtype(_NUMPY[datatype]).itemsize == 0:
            inp["data"] = np.frombuffer(chunk, _NUMPY[datatype]).tolist()
        else:
            raise InvalidInput(f"inputs[{i}] has datatype {datatype!r}, which binary data cannot carry here")
    if pos != len(raw):
        raise InvalidInput(f"{len(raw) - pos} bytes after the last binary input are unaccounted for")
    return json.dumps(header).encode()


def _bytes_elements(chunk: bytes, i: int) -> list[bytes]:
    out, at = [], 0
    while at < len(chunk):
        if at + 4 > len(chunk):
            raise InvalidInput(f"inputs[{i}]: a BYTES element's 4-byte length is cut off")
        n = int.from_bytes(chunk[at:at + 4], "little")
        if at + 4 + n > len(chunk):
            raise InvalidInput(f"inputs[{i}]: a BYTES element of {n} bytes runs past its tensor")
        out.append(chunk[at + 4:at + 4 + n])
        at += 4 + n
    return out


class V2BinaryBody:
    """ASGI middleware: a binary-extension ``/v2/.../infer`` request becomes a JSON one."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not _INFER.match(scope.get("path", "")):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        size = headers.get(_HEADER)
        if size is None:
            # The protocol's body is JSON whatever the Content-Type says: tritonclient, for
            # one, sends none (FastAPI would then not parse the body as JSON).
            kept = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            return await self.app({**scope, "headers": [*kept, (b"content-type", b"application/json")]},
                                  receive, send)
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            if headers.get(b"content-encoding", b"identity") != b"identity":
                raise InvalidInput("compressed requests are not accepted; send the body uncompressed")
            if not size.strip().isdigit():
                raise InvalidInput(f"Inference-Header-Content-Length {size[:40]!r} is not a number")
            body = to_json_request(raw, int(size))
        except InvalidInput as exc:
            return await taskswap_error_response(exc)(scope, receive, send)
        kept = [(k, v) for k, v in scope["headers"]
                if k not in (_HEADER, b"content-length", b"content-type")]
        scope = {**scope, "headers": [*kept, (b"content-type", b"application/json"),
                                      (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # http.disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
