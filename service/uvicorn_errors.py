"""HTTP-level errors (a malformed request line, header or chunk) in our JSON error shape.

uvicorn answers them itself, before any ASGI code runs, with a plain-text 400
("Invalid HTTP request received.") and no ``X-Taskswap-Replica``. Its h11 protocol has one
method for that response; :func:`install` replaces it in this process with one that
sends the same status, our ``{"error", "message", "problems"}`` body and the replica
header. If a future uvicorn renames the method, nothing is patched (and
``tests/resilience/test_hardening_http.py`` says so by failing).
"""

from __future__ import annotations

import json
from typing import Callable

try:  # uvicorn's h11 protocol; another HTTP stack leaves nothing to patch
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:
    h11 = H11Protocol = None


def install(replica_id: Callable[[], str]) -> bool:
    """Patch uvicorn's h11 400 response in this process; True when patched."""
    if H11Protocol is None:
        return False
    if not hasattr(H11Protocol, "send_400_response"):
        return False

    def send_400_response(self, msg: str) -> None:
        message = (f"malformed HTTP request ({msg.rstrip('.')}); send a valid HTTP/1.1 request "
                   "line, headers and body framing")
        body = json.dumps({"error": "bad_request", "message": message, "problems": [message]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"x-taskswap-replica", replica_id().encode("latin-1", "replace")),
                   (b"connection", b"close")]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers,
                                                         reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    H11Protocol.send_400_response = send_400_response
    return True
