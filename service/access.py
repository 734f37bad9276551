"""Who is calling and what they may do: a :class:`Principal` per request.

A principal has one role over a set of namespaces (``*``: all of them). Roles nest:

======== =====================================================================================
infer    read the namespace's tasks: predict, list, show, the protocol routes, rollout reports
register change its tasks too: register, activate, delete, pin, fit / adapt jobs, rollouts
admin    manage the credentials of its namespaces and read their audit log (``/admin/...``)
======== =====================================================================================

**The 404 rule.** A caller that cannot read a namespace learns nothing about it: any name in
it is "not registered", with the same body whether the task exists or not
(:meth:`Principal.check`). A caller that can read it but lacks the role gets 403.

The guard (:mod:`service.auth`) authenticates each request and sets :data:`CURRENT`; routes
whose task names sit in the body (``/predict``, the OpenAI and TGI routes, a registration)
check them with :func:`check` once parsed.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Iterable, Literal

from adapters.errors import NotFound
from adapters.namespaces import namespace_of
from service.errors import Forbidden

Role = Literal["infer", "register", "admin"]
ROLES: tuple[str, ...] = ("infer", "register", "admin")  # each includes the ones before it
ALL = "*"


@dataclass(frozen=True)
class Principal:
    """``Principal("tok1", "register", frozenset({"vision"}))`` may change tasks ``vision/...``."""

    id: str  # a token id, 'bootstrap-admin', 'bootstrap-inference' or 'anonymous'
    role: str
    namespaces: frozenset[str]

    def has(self, role: str, namespace: str) -> bool:
        """True if this principal holds ``role`` (or a higher one) in ``namespace``.

        >>> p = Principal("t", "register", frozenset({"vision"}))
        >>> p.has("infer", "vision"), p.has("admin", "vision"), p.has("infer", "default")
        (True, False, False)
        """
        return ROLES.index(self.role) >= ROLES.index(role) and (ALL in self.namespaces or namespace in self.namespaces)

    def reads(self, namespace: str) -> bool:
        return self.has("infer", namespace)

    def reads_name(self, name: str) -> bool:
        """Whether the task named ``name`` (bare or ``team/task``) is readable."""
        return self.reads(namespace_of(name))

    @property
    def everywhere(self) -> bool:
        return ALL in self.namespaces

    def check(self, role: str, name: str) -> None:
        """Return if ``role`` is held on task ``name``'s namespace; else 403 when the caller
        can read that namespace, or the same 404 as a missing task when it cannot. A
        malformed name is left to the route (its namespace is nobody's: a scoped caller
        gets the 404; a caller over '*' the route's own answer)."""
        namespace = namespace_of(name)
        if self.has(role, namespace):
            return
        if self.reads(namespace):
            raise Forbidden(f"this token ({self.id}) has role {self.role!r} in namespace {namespace!r}; "
                            f"{role!r} is needed: use a token with that role there")
        raise hidden(name)

    def covers(self, namespaces: Iterable[str]) -> bool:
        """Whether this principal administers every namespace of ``namespaces``."""
        wanted = set(namespaces)
        if self.role != "admin":
            return False
        return self.everywhere or (ALL not in wanted and wanted <= self.namespaces)


def hidden(name: str) -> NotFound:
    """What a caller gets for a task in a namespace it cannot read: the message of a task
    that is not registered, whether it is or not."""
    return NotFound(f"task {name!r} is not registered")


ANONYMOUS = Principal("anonymous", "infer", frozenset({ALL}))
BOOTSTRAP_ADMIN = Principal("bootstrap-admin", "admin", frozenset({ALL}))
BOOTSTRAP_INFERENCE = Principal("bootstrap-inference", "infer", frozenset({ALL}))

# Set by the guard for the request being served (an ASGI call runs in one context; FastAPI
# copies it into the thread a sync route runs in).
CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("taskswap_principal", default=ANONYMOUS)


def current() -> Principal:
    return CURRENT.get()


def check(role: str, names: Iterable[str]) -> None:
    """:meth:`Principal.check` of the current request's principal on every name."""
    principal = current()
    for name in names:
        principal.check(role, name)
