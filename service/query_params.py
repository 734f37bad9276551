"""Unknown query parameters are refused on routes that declare some.

A route with ``?name=&offset=&limit=`` that silently ignored ``?limt=10`` would answer
with every task and hide the typo; a 422 naming the parameter and the ones the route
takes says what to fix. Routes that declare no query parameters are left alone, so
clients and gateways that append their own (cache busters, tracing) keep working.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError


async def refuse_unknown_query(request: Request) -> None:
    """FastAPI dependency: a 422 (like any other request validation error) for a query key
    the route does not take. ``async`` only so that FastAPI runs it on the event loop: a plain
    ``def`` dependency is run in a worker thread, a thread hop on every request for a few
    dictionary lookups."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    # ``self`` is BentoML's injected service instance, not a parameter a client sends.
    known = {p.alias for p in dependant.query_params} - {"self"}
    if not known:
        return
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError([{
            "loc": ("query", unknown[0][:64]), "type": "extra_forbidden",
            "msg": f"unknown query parameter; this route takes {sorted(known)}"}])
