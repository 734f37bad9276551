"""The client's typed errors: one class per kind of refusal, all :class:`TaskswapHTTPError`.

``status`` is the HTTP status, ``error`` the server's kind of error (``invalid_input``,
``not_found``, ``over_capacity``...), ``message`` its sentence naming the problem and the fix.
Both error shapes the server speaks are read: its own (``{"error", "message", "problems"}``)
and OpenAI's (``{"error": {"message", "type"}}``, the generation routes').
"""

from __future__ import annotations

import json

import httpx


class TaskswapHTTPError(Exception):
    """The server refused a call: ``status``, ``error`` (kind), ``message``, ``problems``."""

    def __init__(self, status: int, error: str, message: str, problems: list[str] | None = None):
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status, self.error, self.message = status, error, message
        self.problems = problems or [message]

    @classmethod
    def from_response(cls, r: httpx.Response) -> "TaskswapHTTPError":
        """The typed error of a refused answer (:class:`InvalidRequest` for a 400, ...).

        >>> type(TaskswapHTTPError.from_response(httpx.Response(404, json={"error": {"message": "no", "type": "not_found"}})))
        <class 'taskswap_client.errors.TaskNotFound'>
        """
        kind = _BY_STATUS.get(r.status_code, TaskswapHTTPError)
        try:
            body = r.json()
        except ValueError:
            return kind(r.status_code, "http_error", r.text[:500] or r.reason_phrase)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return kind(r.status_code, str(body.get("error")), body["message"], body.get("problems"))
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):  # OpenAI's shape
            return kind(r.status_code, str(err.get("type")), err["message"])
        return kind(r.status_code, "http_error", json.dumps(body)[:500])


class InvalidRequest(TaskswapHTTPError):
    """400 / 422: the request itself is wrong (the message names the field)."""


class Unauthorized(TaskswapHTTPError):
    """401 / 403: no token, or one without the scope the call needs."""


class TaskNotFound(TaskswapHTTPError):
    """404: no such task (or version, or backbone)."""


class Conflict(TaskswapHTTPError):
    """409: the call contradicts the server's state (a version check, an incompatible backbone)."""


class OverCapacity(TaskswapHTTPError):
    """429: the server is full (retried by the client; raised once the retries are spent)."""


class GenerationTimeout(TaskswapHTTPError):
    """504: the call did not finish within the server's time limit."""


class GenerationFailed(TaskswapHTTPError):
    """A stream that had started reported an error instead of its end (status 200 was sent)."""

    def __init__(self, error: str, message: str):
        super().__init__(200, error, message)


_BY_STATUS = {400: InvalidRequest, 422: InvalidRequest, 401: Unauthorized, 403: Unauthorized,
              404: TaskNotFound, 409: Conflict, 429: OverCapacity, 504: GenerationTimeout}
