"""Reading one answer with bounds: a deadline on the whole body, a cap on its size.

httpx's ``timeout`` bounds each network operation (connect, each read), so a server that
trickles a byte every few seconds keeps a call alive for ever, and a client reads any
size of body into memory. :func:`send_sync` / :func:`send_async` stream the answer
instead: past ``timeout_s`` since the request was sent, :class:`TaskswapTimeout`; past
``max_bytes`` of body, :class:`TaskswapResponseError`. The answer comes back as an
ordinary (fully read) ``httpx.Response``.
"""

from __future__ import annotations

import asyncio
import time

import httpx


class TaskswapTimeout(httpx.ReadTimeout):
    """The whole call (headers and body) took longer than the client's ``timeout_s``. An
    ``httpx.ReadTimeout``, so code written for httpx's own per-read timeout still catches it."""


class TaskswapResponseError(Exception):
    """The server's answer could not be used: too large, or a 2xx body that is not what the
    call returns. ``status`` is the HTTP status; ``message`` says what was wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def _check(path: str, total: int, max_bytes: int, deadline: float, timeout_s: float) -> None:
    if total > max_bytes:
        raise TaskswapResponseError(0, f"the answer to {path} is larger than {max_bytes} bytes "
                                       "(the client's max_response_bytes)")
    if time.monotonic() > deadline:
        raise TaskswapTimeout(f"{path}: no complete answer within {timeout_s:g} s")


def send_sync(http: httpx.Client, method: str, path: str, timeout_s: float, max_bytes: int,
              **kw) -> httpx.Response:
    """One request with a deadline on the whole answer and a size cap on its body."""
    deadline = time.monotonic() + timeout_s
    with http.stream(method, path, **kw) as r:
        chunks, total = [], 0
        _check(path, 0, max_bytes, deadline, timeout_s)
        for chunk in r.iter_bytes():
            total += len(chunk)
            _check(path, total, max_bytes, deadline, timeout_s)
            chunks.append(chunk)
        return _decoded(r, chunks)


async def send_async(http: httpx.AsyncClient, method: str, path: str, timeout_s: float,
                     max_bytes: int, **kw) -> httpx.Response:
    """The async :func:`send_sync`; a read that stalls is cut at the deadline too."""
    deadline = time.monotonic() + timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            async with http.stream(method, path, **kw) as r:
                chunks, total = [], 0
                async for chunk in r.aiter_bytes():
                    total += len(chunk)
                    _check(path, total, max_bytes, deadline, timeout_s)
                    chunks.append(chunk)
                return _decoded(r, chunks)
    except TimeoutError:  # asyncio.timeout's: the deadline passed while a read waited
        raise TaskswapTimeout(f"{path}: no complete answer within {timeout_s:g} s") from None


def _decoded(r: httpx.Response, chunks: list[bytes]) -> httpx.Response:
    """The answer as a read response; its body is already decoded (``iter_bytes``), so the
    headers that described the encoded body are dropped."""
    headers = [(k, v) for k, v in r.headers.multi_items()
               if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(r.status_code, headers=headers, content=b"".join(chunks), request=r.request)
