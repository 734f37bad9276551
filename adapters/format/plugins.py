"""The plug-in tables the format checks against, handed down by the layers that own them.

The format sits below the adapter kinds and task types it describes, so it cannot import
their tables (``adapters.kinds.KINDS``, ``adapters.tasks.TASK_TYPES``). Each table's package
hands it over when it is imported (:func:`use_kinds`, :func:`use_task_types`); the format
reads the very same dictionaries. Reading an adapter directory needs both
(:func:`kinds`, :func:`task_types`: a clear error when its package was never imported;
``adapters.kinds`` imports ``adapters.tasks``). A :class:`~adapters.format.manifest.Manifest`
built in code is checked against the tables its process has loaded (:func:`loaded`), and in
full again when its directory is read for registration.
"""

from __future__ import annotations

from typing import Mapping, Protocol


class KindRules(Protocol):
    """What the format asks of an adapter kind (:class:`adapters.kinds.AdapterKind`)."""

    name: str
    weight_files: tuple[str, ...]
    marker_file: str | None


class TaskRules(Protocol):
    """What the format asks of a task type (:class:`adapters.tasks.TaskType`)."""

    name: str
    features: str

    def output_names(self, m) -> list[str]: ...  # m: a Manifest

    def check_manifest(self, m) -> list[str]: ...


_KINDS: Mapping[str, KindRules] | None = None
_TASK_TYPES: Mapping[str, TaskRules] | None = None


def use_kinds(table: Mapping[str, KindRules]) -> None:
    """Check manifests and adapter directories against ``table`` (``adapters.kinds`` calls this)."""
    global _KINDS
    _KINDS = table


def use_task_types(table: Mapping[str, TaskRules]) -> None:
    """Check manifests against ``table`` (``adapters.tasks`` calls this)."""
    global _TASK_TYPES
    _TASK_TYPES = table


def loaded() -> tuple[Mapping[str, KindRules] | None, Mapping[str, TaskRules] | None]:
    """The kinds and task types tables, each None while its package is not imported."""
    return _KINDS, _TASK_TYPES


def kinds() -> Mapping[str, KindRules]:
    """The adapter kinds table (``adapters.kinds.KINDS``)."""
    if _KINDS is None:
        raise RuntimeError("the adapter kinds table is not loaded: import adapters.kinds "
                           "before reading an adapter directory")
    return _KINDS


def task_types() -> Mapping[str, TaskRules]:
    """The task types table (``adapters.tasks.TASK_TYPES``)."""
    if _TASK_TYPES is None:
        raise RuntimeError("the task types table is not loaded: import adapters.tasks "
                           "before reading an adapter directory or a manifest's output names")
    return _TASK_TYPES


def kind_of_files(names: set[str]) -> KindRules | None:
    """The kind of a directory without ``adapter.json``, from its files (plain PEFT = lora)."""
    for k in kinds().values():
        if k.marker_file is not None and k.marker_file in names:
            return k
    return None
