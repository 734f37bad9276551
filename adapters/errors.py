"""The one exception hierarchy of Taskswap.

Every error the core raises on purpose is a :class:`TaskswapError`. The service maps
each subclass to an HTTP status in exactly one place (``service/errors.py``); nothing
else in the code base decides status codes.

Messages name the bad value and the fix, e.g.::

    raise InvalidAdapter("adapter.json: 'kind' is 'adapterx'; use 'head' or 'lora'")
"""

from __future__ import annotations


class TaskswapError(Exception):
    """Base class. ``problems`` holds every issue found when several were collected."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [message])

    @classmethod
    def collect(cls, problems: list[str], prefix: str = "") -> None:
        """Raise one error listing every problem, or return when there is none."""
        if problems:
            head = f"{prefix}: " if prefix else ""
            raise cls(head + "; ".join(problems), problems)


class NotFound(TaskswapError):
    """A task, adapter version or store path that does not exist."""


class InvalidInput(TaskswapError):
    """A request or data set that is malformed: empty, oversized, undecodable, wrong modality."""


class Unsupported(TaskswapError):
    """A well-formed request for something this server does not do for that task (yet)."""


class InvalidAdapter(TaskswapError):
    """An adapter directory or archive that breaks the format (pickles, bad manifest, links...)."""


class IncompatibleAdapter(TaskswapError):
    """A well-formed adapter that does not fit the backbone (fingerprint, shapes, no target module)."""


class NonFiniteOutput(InvalidAdapter):
    """Scores (an adapter's huge weights or scaling) or embeddings (a backbone's features on
    some input) that overflow to NaN/infinity: never answered as ``null``."""


class Conflict(TaskswapError):
    """A state change that lost a race (alias changed underneath) or contradicts the current state."""


class CapacityError(TaskswapError):
    """The server is over capacity (queue full, memory budget); retry later."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AdapterUnavailable(TaskswapError):
    """A stored adapter version that could not be loaded in this process when a request
    needed it (corrupt files, a backbone this replica lacks): that request fails, the
    task's next request retries the load, and other tasks are unaffected."""

    def __init__(self, message: str, retry_after_s: float = 5.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthorized(TaskswapError):
    """Missing or wrong bearer token, or admin calls on a server with no admin token."""


class QuotaExceeded(TaskswapError):
    """A namespace is at one of its size quotas (tasks, stored bytes, resident bytes, jobs):
    the message names the quota and its numbers; nothing was written."""

    def __init__(self, message: str, quota: str = ""):
        super().__init__(message)
        self.quota = quota


class RateLimited(CapacityError):
    """A namespace is over its request-rate or rows-per-second quota: retry after
    ``retry_after_s`` (429 with ``Retry-After``)."""
