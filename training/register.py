"""Upload an adapter folder to a running Taskswap server: ``POST /adapters`` (admin token).

The folder is zipped and sent by :class:`taskswap_client.Client` as the multipart field
``file`` (optional ``name`` / ``labels`` / ``backbone`` fields), the same request as ``curl -F file=@adapter.zip -H "Authorization: Bearer $TOKEN" URL/adapters``.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from adapters.errors import TaskswapError
from taskswap_client import Client, TaskswapHTTPError


class RegistrationFailed(TaskswapError):
    """The server could not be reached or refused the adapter; ``status`` is its HTTP code."""

    def __init__(self, message: str, problems: list[str] | None = None, status: int | None = None):
        super().__init__(message, problems)
        self.status = status


def adapters_url(url: str) -> str:
    """``http://host:3000`` or ``http://host:3000/adapters`` -> the registration endpoint.

    >>> adapters_url("http://127.0.0.1:3000/")
    'http://127.0.0.1:3000/adapters'
    """
    url = url.rstrip("/")
    return url if url.endswith("/adapters") else url + "/adapters"


def register_with_server(folder: Path, url: str, token: str | None = None, name: str | None = None,
                         labels: list[str] | None = None, backbone: str | None = None,
                         timeout_s: float = 300.0) -> dict:
    """Upload ``folder`` with :class:`taskswap_client.Client`; returns the server's JSON
    answer (name, version, kind, ...).

    ``token`` defaults to ``$TASKSWAP_ADMIN_TOKEN``. Raises :class:`RegistrationFailed`
    with the server's own message on any refusal.
    """
    token = token or os.environ.get("TASKSWAP_ADMIN_TOKEN")
    endpoint = adapters_url(url)
    base = endpoint.removesuffix("/adapters")
    try:
        with Client(base, token=token or "", timeout_s=timeout_s, retries=2, backoff_s=0.2) as client:
            return client.register(Path(folder), name=name, labels=labels, backbone=backbone).model_dump()
    except httpx.HTTPError as exc:
        raise RegistrationFailed(f"cannot reach {endpoint} ({type(exc).__name__}: {exc}); "
                                 "is the server running at that address?") from exc
    except TaskswapHTTPError as exc:
        hint = " (set --token or TASKSWAP_ADMIN_TOKEN to the server's admin token)" \
            if exc.status in (401, 403) else ""
        raise RegistrationFailed(f"server refused the adapter: HTTP {exc.status}: {exc.message}{hint}",
                                 exc.problems, exc.status) from exc
