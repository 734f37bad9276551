"""Two adaptation methods in sequence: the first adapts (its kind, its files), the second
refines the result's head (a method with ``refines``, e.g. ``label_shift``).

``coral+label_shift`` aligns the target features' statistics, then moves the bias to the
target's class prior; ``pseudo_label+label_shift`` self-trains a LoRA, then does the same.
The composed method is one table entry; nothing tests which methods it holds.

Example::

    >>> from training.domain.coral_method import CoralMethod
    >>> from training.domain.label_shift_method import LabelShiftMethod
    >>> m = Composed(CoralMethod(), LabelShiftMethod())
    >>> m.name, m.kind, m.needs_source_stats, m.needs_calibration
    ('coral+label_shift', 'head', True, True)
"""

from __future__ import annotations

from training.domain.base import AdaptationMethod


class Composed(AdaptationMethod):
    def __init__(self, first: AdaptationMethod, then: AdaptationMethod):
        if not then.refines:
            raise ValueError(f"{then.name} cannot refine another method's result")
        self.first, self.then = first, then
        self.name = f"{first.name}+{then.name}"
        self.kind, self.trunk_changed = first.kind, first.trunk_changed
        self.needs_source_stats = first.needs_source_stats or then.needs_source_stats
        self.needs_calibration = first.needs_calibration or then.needs_calibration
        types = [t for t in (first.task_types, then.task_types) if t is not None]
        self.task_types = tuple(x for x in types[0] if all(x in t for t in types)) if types else None
        self.recipe = first.recipe + " Then: " + then.recipe

    def run(self, ctx, cfg):
        return self.then.refine(ctx, self.first.run(ctx, cfg), cfg)

    def card_lines(self, notes):
        return self.first.card_lines(notes) + self.then.card_lines(notes)

    def write(self, out, manifest, card, adapted):
        self.first.write(out, manifest, card, adapted)
