"""Equal parts of many manifests and aliases held once, not once per task.

With 100,000 registered heads, each loaded manifest and alias repeats the same backbone
reference, head spec, preprocessing settings, empty metrics, label lists ("neg", "pos")
and pydantic bookkeeping sets. :func:`compact_manifest` and :func:`compact_alias` swap
those, in place, for one shared object per distinct value: the models compare, dump and
validate exactly as before. Shared values are never mutated (a loaded manifest or alias
is read-only; a change makes a new one with ``model_copy``/``model_validate``).

The pool is bounded (:data:`POOL_SIZE` distinct values, then it starts over), so tasks
with unique labels cost what they cost before, and a deleted task's values cannot pile up.

>>> from adapters.format.manifest import HeadSpec
>>> a = _shared(("head", "x"), HeadSpec(pooling="mean", input_dim=4))
>>> a is _shared(("head", "x"), HeadSpec(pooling="mean", input_dim=4))
True
"""

from __future__ import annotations

import json
import sys
import threading

POOL_SIZE = 1 << 16
_POOL: dict = {}
_LOCK = threading.Lock()


def _shared(key, value):
    """The pooled object for ``key``, ``value`` becoming it on first sight."""
    with _LOCK:
        got = _POOL.get(key)
        if got is None:
            if len(_POOL) >= POOL_SIZE:
                _POOL.clear()
            got = _POOL[key] = value
        return got


def _names(values: list) -> list:
    if not all(isinstance(v, str) for v in values):
        return values
    return _shared(("names", tuple(values)), [sys.intern(v) for v in values])


def _plain(value):
    """A JSON-able dict/None pooled by its canonical JSON (left alone if not JSON-able)."""
    if not value:
        return _shared(("empty", type(value).__name__), value) if isinstance(value, dict) else value
    try:
        return _shared(("json", json.dumps(value, sort_keys=True)), value)
    except (TypeError, ValueError):
        return value


def _bookkeeping(model) -> None:
    """Share pydantic's per-instance ``fields_set`` (and an empty ``extra``)."""
    fields = model.__pydantic_fields_set__
    object.__setattr__(model, "__pydantic_fields_set__",
                       _shared(("fields", type(model).__name__, frozenset(fields)), fields))
    extra = model.__pydantic_extra__
    if extra is not None and not extra:
        object.__setattr__(model, "__pydantic_extra__", _shared(("extra",), extra))


def compact_manifest(m):
    """``m`` (a :class:`~adapters.format.manifest.Manifest`) with its equal parts shared."""
    d = m.__dict__
    d["kind"], d["task_type"] = sys.intern(m.kind), sys.intern(m.task_type)
    d["backbone"] = _shared(("backbone", m.backbone.model_dump_json()), m.backbone)
    if m.head is not None:
        d["head"] = _shared(("head", m.head.model_dump_json()), m.head)
    d["labels"], d["outputs"] = _names(m.labels), _names(m.outputs)
    for key in ("preprocessing", "metrics", "training", "target_scaling"):
        d[key] = _plain(d[key])
    _bookkeeping(m)
    return m


def compact_alias(alias):
    """``alias`` (an :class:`~adapters.store.base.Alias`) with its equal parts shared; its
    ``active`` becomes the same string object as that version's record."""
    for v in alias.versions:
        v.__dict__["kind"] = sys.intern(v.kind)
        v.__dict__["labels"] = _names(v.labels)
        _bookkeeping(v)
        if v.version == alias.active:
            alias.__dict__["active"] = v.version
    _bookkeeping(alias)
    return alias
