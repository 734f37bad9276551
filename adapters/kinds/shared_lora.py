"""``shared_lora``: a LoRA on the trunk that several tasks share, with no head of its own.

Its files are PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` and an
``adapter.json`` (kind ``shared_lora``, task type ``trunk_adaptation``): a plain PEFT
folder without a manifest stays a single ``lora`` task. It is registered under its own
name and versioned like a task; the tasks that ride on it (kind ``multitask``,
:mod:`adapters.kinds.multitask`) name one of its versions in their manifest's ``shared``.

Its rows are LoRA rows: :meth:`trunk_state` names the ``lora`` kind with these weights, so
they join the chunk's one LoRA bucket (two LoRA buckets would fight over the one active
per-row batch of :mod:`adapters.lora.batch`), and every task riding on the same loaded
version carries the *same* state, which the runtime runs once per input.
"""

from __future__ import annotations

from adapters.errors import InvalidAdapter
from adapters.kinds.base import RowState
from adapters.kinds.lora import LoraKind
from adapters.lora.weights import load_lora_weights
from adapters.tasks import output_names, task_type


class SharedLoraKind(LoraKind):
    name = "shared_lora"
    marker_file = None  # needs adapter.json: a bare PEFT folder is a single lora task
    provides_shared_trunk = True

    def __init__(self, lora: LoraKind):
        self.lora = lora  # the kind whose bucket its rows join

    def synthesise_manifest(self, adir, backbone, plan, name, names):
        raise InvalidAdapter("a shared_lora adapter needs an adapter.json (kind 'shared_lora', "
                             "task_type 'trunk_adaptation'); a plain PEFT folder registers as a "
                             "single lora task")

    def check(self, adir, m, backbone, plan) -> None:
        problems = []
        t = task_type(m.task_type)
        if t.generates or output_names(m):
            problems.append(f"task_type {m.task_type!r} has outputs of its own; a shared_lora "
                            "adapter is a trunk_adaptation (its tasks hold the heads)")
        if "head.safetensors" in adir.headers:
            problems.append("head.safetensors: a shared adaptation has no head; each task riding "
                            "on it ships its own (kind 'multitask')")
        problems += [f"modules_to_save {k!r}: a shared adaptation holds LoRA factors only"
                     for k in sorted(plan.extras)]
        InvalidAdapter.collect(problems, "shared_lora adapter")

    def load(self, adir, m, backbone, plan):
        return {}, load_lora_weights(adir.path / "adapter_model.safetensors", adir.peft_config, plan)

    def trunk_state(self, weights):
        return RowState(self.lora, weights)
