"""The ``{name:task}`` path convertor of the bare task routes (``GET /adapters/{name}``,
``DELETE /adapters/{name}``, ``GET /v2/models/{task}``).

A task name may hold one '/' (``team/task``), so these routes take the rest of the path;
but a path ending in a URL word (``/adapters/ok/pin``) is a route of that word, and a
method it does not declare must get 405, not this route's "invalid name". The task part of
a qualified name is never a URL word (:data:`adapters.store.base.ROUTE_WORDS`), so
nothing servable is lost. Registered with Starlette when this module is imported.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

from adapters.store.base import ROUTE_WORDS


class TaskNameConvertor(Convertor):
    regex = rf"(?!.+/(?:{'|'.join(sorted(ROUTE_WORDS))})$).+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task", TaskNameConvertor())
