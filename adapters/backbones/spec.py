"""What a backbone is configured as (:class:`BackboneSpec`): plain data, no model code.

Its own module so that reading settings (``service.settings``, the ``bentoml serve``
process that only reads the service's definition) imports no torch model code and no
transformers; :mod:`adapters.backbones.base` loads a spec into a :class:`Backbone`.

    >>> BackboneSpec(name="text", source="embedded:all-MiniLM-L6-v2").max_length
    128
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """How to load one backbone. ``source``: HF id, local folder or ``embedded:<name>``."""

    name: str
    source: str
    max_length: int = 128
    image_size: int | None = None
    device: str = "auto"
    half: bool = False
