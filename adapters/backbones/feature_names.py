"""Names of a backbone's feature outputs that task types ask for (no model code: the task
types and the service definition import this without transformers or torch)."""

from __future__ import annotations

MAP_PREFIX = "map:"


def map_feature(stride: int) -> str:
    """The feature name of the spatial map at ``stride`` (``map_feature(16) == "map:16"``)."""
    return f"{MAP_PREFIX}{stride}"


def map_strides(names) -> tuple[int, ...]:
    """The strides of the spatial maps among feature ``names``, ascending."""
    return tuple(sorted(int(n[len(MAP_PREFIX):]) for n in names if n.startswith(MAP_PREFIX)))
