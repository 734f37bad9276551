"""Upload an adapter folder to a running Taskswap server: ``POST /adapters`` (admin token).

The folder is packed with ``adapters.format.archive.make_archive`` (zip) and sent as the
multipart field ``file`` (optional ``name`` / ``labels`` / ``backbone`` fields), the same
request as ``curl -F file=@adapter.zip -H "Authorization: Bearer $TOKEN" URL/adapters``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from adapters.errors import TaskswapError
from adapters.format.archive import make_archive


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
    """Upload ``folder``; returns the server's JSON answer (name, version, kind, ...).

    ``token`` defaults to ``$TASKSWAP_ADMIN_TOKEN``. Raises :class:`RegistrationFailed`
    with the server's own message on any refusal.
    """
    token = token or os.environ.get("TASKSWAP_ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    fields = {k: v for k, v in (("name", name), ("backbone", backbone),
                                ("labels", json.dumps(labels) if labels else None)) if v}
    archive = make_archive(Path(folder), "zip")
    endpoint = adapters_url(url)
    try:
        resp = httpx.post(endpoint, headers=headers, data=fields,
                          files={"file": (f"{Path(folder).name}.zip", archive, "application/zip")},
                          timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise RegistrationFailed(f"cannot reach {endpoint} ({type(exc).__name__}: {exc}); "
                                 "is the server running at that address?") from exc
    if resp.status_code in (200, 201):
        return resp.json()
    try:
        body = resp.json()
        message, problems = body.get("message") or resp.text, body.get("problems")
    except ValueError:
        message, problems = resp.text[:500], None
    hint = " (set --token or TASKSWAP_ADMIN_TOKEN to the server's admin token)" \
        if resp.status_code in (401, 403) else ""
    raise RegistrationFailed(f"server refused the adapter: HTTP {resp.status_code}: {message}{hint}",
                             problems, resp.status_code)
