"""Modules executed on first use instead of at import.

``bentoml serve`` imports the service module twice: in its own process, only to read the
service's definition (name, workers, routes) before it starts the worker, and again in the
worker, which builds the engine. The engine's module pulls in the model code (transformers,
PEFT: most of a process's start-up imports) that only the worker uses; declared here, at
module level, it is executed by the first use of one of its names — ``Taskswap.__init__``,
in the worker — and never in the ``bentoml serve`` process, which starts the worker that
much sooner.

Unlike ``importlib.util.LazyLoader``, which executes a module on *any* attribute access,
only a name the module does not have yet triggers it: code that walks ``sys.modules`` and
reads dunders (``inspect.getmodule`` checks every module's ``__file__``, and torch calls it
while it is itself being imported) must not execute the engine in the middle of another
module's import.

    >>> m = lazy_module("json.tool")   # not executed yet
    >>> callable(m.main)               # executed here
    True
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType

_LOCK = threading.RLock()


class _Deferred(ModuleType):
    """A module whose body runs when a name it lacks is first read (dunders never run it)."""

    def __getattr__(self, attr: str):  # called only for names not in the module yet
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        with _LOCK:
            if type(self) is _Deferred:  # not executed by another thread meanwhile
                self.__class__ = ModuleType
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(self.__name__, None)  # a later import retries and raises
                    raise
        return getattr(self, attr)


def lazy_module(name: str) -> ModuleType:
    """The module ``name``: the one already imported, else one executed when a name it
    lacks is first read. An unknown ``name`` raises ``ModuleNotFoundError`` at once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module
    return module
