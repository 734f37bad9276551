"""Adapter kinds: where adapted weights sit (see :mod:`adapters.kinds.base` for the interface).

Adding one: a new file with an :class:`AdapterKind` subclass, and one entry below.
"""

from __future__ import annotations

from adapters.errors import InvalidAdapter
from adapters.kinds.base import AdapterKind, TrunkPass
from adapters.kinds.head import HeadKind
from adapters.kinds.lora import LoraKind
from adapters.kinds.multitask import MultitaskKind
from adapters.kinds.prompt import PromptKind
from adapters.kinds.shared_lora import SharedLoraKind
from adapters.kinds.top_layers import TopLayersKind

_LORA = LoraKind()  # shared_lora and multitask rows join its bucket
KINDS: dict[str, AdapterKind] = {k.name: k for k in (HeadKind(), _LORA, TopLayersKind(), PromptKind(),
                                                     SharedLoraKind(_LORA), MultitaskKind(_LORA))}


def adapter_kind(name: str) -> AdapterKind:
    """The kind called ``name``; an ``InvalidAdapter`` naming the known ones otherwise."""
    k = KINDS.get(name)
    if k is None:
        raise InvalidAdapter(f"kind {name!r} is unknown; use one of {sorted(KINDS)}")
    return k


def kind_of_files(names: set[str]) -> AdapterKind | None:
    """The kind of a directory without ``adapter.json``, from its files (plain PEFT = lora)."""
    for k in KINDS.values():
        if k.marker_file is not None and k.marker_file in names:
            return k
    return None


__all__ = ["AdapterKind", "KINDS", "TrunkPass", "adapter_kind", "kind_of_files"]
