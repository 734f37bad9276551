"""Namespaces: a task name may be qualified, ``team/task``; a bare ``task`` lives in the
default namespace, so the names, stores and URLs of a single-team server keep working.

This module only parses names. Who may read or change a namespace lives with the
credentials; what a namespace may hold lives with the quotas.
"""

from __future__ import annotations

DEFAULT_NAMESPACE = "default"
SEPARATOR = "/"


def split_name(name: str) -> tuple[str, str]:
    """``(namespace, task)`` of a task name; a bare name is in :data:`DEFAULT_NAMESPACE`.

    >>> split_name("vision/defects"), split_name("sentiment")
    (('vision', 'defects'), ('default', 'sentiment'))
    """
    namespace, sep, task = name.partition(SEPARATOR)
    return (namespace, task) if sep else (DEFAULT_NAMESPACE, name)


def namespace_of(name: str) -> str:
    """The namespace a task name belongs to.

    >>> namespace_of("vision/defects"), namespace_of("sentiment")
    ('vision', 'default')
    """
    return split_name(name)[0]


def qualified(namespace: str, task: str) -> str:
    """The task's name as clients write it: bare in the default namespace.

    >>> qualified("vision", "defects"), qualified("default", "sentiment")
    ('vision/defects', 'sentiment')
    """
    return task if namespace == DEFAULT_NAMESPACE else f"{namespace}{SEPARATOR}{task}"
