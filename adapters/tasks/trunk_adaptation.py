"""``trunk_adaptation``: a shared adaptation of the trunk that answers nothing itself.

The adaptation several tasks were trained on together (kind ``shared_lora``: a PEFT LoRA
with no head) is registered under its own name and versioned like a task, so the store
keeps it once, content-addressed; each task riding on it (kind ``multitask``) names one
of its versions plus its own head. It has no outputs and no head, and a request naming it
is refused before the batch: it reads a feature no backbone gives (the same way the
encoders' runtime refuses a generation task), whose name says what to ask instead.
"""

from __future__ import annotations

from adapters.errors import InvalidInput
from adapters.tasks.base import TaskType

RIDERS_ONLY = "nothing: a shared adaptation; ask a task that rides on it"
"""What a trunk adaptation 'reads': no backbone gives it, so ``/predict`` on the adaptation
itself is a 400 naming this."""


class TrunkAdaptation(TaskType):
    name = "trunk_adaptation"

    def output_names(self, m) -> list[str]:
        return []

    def check_manifest(self, m) -> list[str]:
        problems = []
        if m.labels or m.outputs:
            problems.append("a trunk_adaptation has no 'labels' or 'outputs': its tasks have them")
        if m.head is not None:
            problems.append("a trunk_adaptation has no 'head': each task riding on it has its own")
        return problems

    def from_peft(self, n_outputs: int, names: list[str] | None) -> dict:
        return {}

    def rename(self, names: list[str]) -> dict:
        raise InvalidInput("a shared adaptation has no labels to rename; omit 'labels'")

    def describe(self, m) -> dict:
        return {"labels": []}

    def needs(self, m) -> set[str]:
        return {RIDERS_ONLY}
