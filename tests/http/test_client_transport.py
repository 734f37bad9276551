"""The typed client's transport bounds, against a real (hostile) HTTP server on loopback:
a body trickled past the timeout, a body over the size cap, a 200 that is not the answer."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

import pytest

from taskswap_client import (AsyncClient, Client, TaskswapResponseError, TaskswapTimeout)


class _Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/adapters":
            if self.server.mode == "trickle":  # valid JSON, one byte every 0.2 s
                body = b'{"adapters": []}' + b" " * 200
                self._head(len(body))
                for i in range(len(body)):
                    try:
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.2)
            elif self.server.mode == "huge":
                body = b" " * (3 << 20)
                self._head(len(body))
                self.wfile.write(body)
            else:  # a 200 from something that is not Taskswap
                body = b"<html>gateway login</html>"
                self._head(len(body), "text/html")
                self.wfile.write(body)

    def _head(self, n: int, ctype: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(n))
        self.end_headers()


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # the client hanging up is the point
        pass


@pytest.fixture
def hostile():
    srv = _Server(("127.0.0.1", 0), _Hostile)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_a_trickled_body_is_cut_at_the_whole_call_timeout(hostile):
    hostile.mode = "trickle"  # each read arrives well within httpx's per-read timeout
    with Client(_url(hostile), timeout_s=1.0, retries=0) as c:
        with pytest.raises(TaskswapTimeout):
            c.list()


def test_a_trickled_body_is_cut_async(hostile):
    hostile.mode = "trickle"

    async def call():
        async with AsyncClient(_url(hostile), timeout_s=1.0, retries=0) as c:
            await c.list()
    with pytest.raises(TaskswapTimeout):
        asyncio.run(call())


def test_a_body_over_the_cap_is_refused(hostile):
    hostile.mode = "huge"
    with Client(_url(hostile), retries=0) as c:
        c.max_response_bytes = 1 << 20
        with pytest.raises(TaskswapResponseError, match="larger than 1048576 bytes"):
            c.list()


def test_a_malformed_200_raises_the_clients_own_error(hostile):
    hostile.mode = "html"
    with Client(_url(hostile), retries=0) as c:
        with pytest.raises(TaskswapResponseError, match="not a valid AdapterList") as info:
            c.list()
    assert info.value.status == 200
