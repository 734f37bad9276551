"""The generation demos by ``--demo`` name: their splits and their task's prompt settings.

``translate-en-{fr,de,es}`` (Debian gettext catalogs, split by catalog:
:mod:`training.generation.translation`) and ``summarise-man`` (manual pages' DESCRIPTION →
NAME summary, split by Debian package: :mod:`training.generation.man_pages`).

>>> sorted(DEMOS)
['summarise-man', 'translate-en-de', 'translate-en-es', 'translate-en-fr']
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, partial
from typing import Callable

from adapters.format.manifest import GenerationSpec
from training.generation import man_pages, translation
from training.generation.data import GenerationData


@dataclass(frozen=True)
class GenerationDemo:
    load: Callable[[], dict[str, GenerationData]]
    """``{"train", "validation", "test"}``, each split held out by source (catalog, package);
    read once per process (the splits of one run come from one read)."""
    spec: Callable[[], GenerationSpec]
    """The demo task's prompt template, stop sequences and limits."""
    held_out: str
    """What the held-out splits hold out whole, for reports ("catalogs", "packages")."""


DEMOS: dict[str, GenerationDemo] = {
    **{name: GenerationDemo(cache(partial(translation.load_translation, name)), partial(translation.translation_spec, code),
                            "catalogs")
       for name, code in translation.DEMOS.items()},
    man_pages.DEMO: GenerationDemo(cache(man_pages.load_man_pages), man_pages.summary_spec, "packages"),
}


def held_out_groups(data: GenerationData) -> str:
    """The groups (catalogs, packages) a split's examples come from, with counts."""
    counts: dict[str, int] = {}
    for e in data.examples:
        counts[e.group] = counts.get(e.group, 0) + 1
    return ", ".join(f"{g} {n}" for g, n in sorted(counts.items()))
