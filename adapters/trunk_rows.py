"""Which adapters of a request cost trunk rows of their own.

A task whose kind reads the plain frozen trunk (a head) shares the request's plain row per
input; any other task carries a trunk state (``RowState``, :mod:`adapters.kinds.base`)
into its own rows, except that tasks whose states have equal keys (riding on one shared
adaptation version) compute the same rows, which run once. The runtime builds rows by
this rule and :mod:`adapters.cost` prices them by it (duck-typed: no kind is imported).
"""

from __future__ import annotations


def own_row_adapters(adapters) -> list:
    """Of ``adapters`` (loaded adapters), those that cost trunk rows of their own, one per
    distinct trunk state: tasks whose kinds give equal :attr:`RowState.key` (tasks riding on
    the same shared adaptation version) share one row per input, the first one standing
    for them all.

    >>> own_row_adapters([])
    []
    """
    seen, out = set(), []
    for a in adapters:
        if a.impl.shares_trunk_row:
            continue
        state = a.impl.trunk_state(a.weights)
        key = None if state is None else state.key
        if key is None or key not in seen:
            out.append(a)
        if key is not None:
            seen.add(key)
    return out
