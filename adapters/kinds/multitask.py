"""``multitask``: a task's own head on a shared trunk adaptation it names.

Its folder holds ``adapter.json`` (with ``shared: {name, version}``) and
``head.safetensors``; the LoRA is the shared adaptation's, registered once under its own
name (kind ``shared_lora``, :mod:`adapters.kinds.shared_lora`). At registration and at
every load, :meth:`MultitaskKind.bind` resolves that version (its active one when the manifest names none, at
registration; through the store, loaded
once per process however many tasks ride on it) and checks it: it must exist, be a shared
adaptation, and run on the task's backbone; the head must read that backbone's features.

Serving: the task's rows carry the shared adaptation's own trunk state (the ``lora``
kind with the shared weights), so all the tasks riding on one version that a request asks
about the same input share one adapted trunk row, as heads share the plain one. Its bytes
are the head's: the LoRA is counted once, on the shared adaptation's own entry.
"""

from __future__ import annotations

from adapters.errors import IncompatibleAdapter, InvalidAdapter, InvalidInput, NotFound
from adapters.format.safetensors_io import load_tensors
from adapters.kinds.base import AdapterKind
from adapters.kinds.lora import LoraKind
from adapters.kinds.trunk import COMPOSED_TRUNK
from adapters.tasks import task_type


class MultitaskKind(AdapterKind):
    name = "multitask"
    weight_files = ("head.safetensors",)
    evictable = True  # holds the shared LoRA in memory while it is resident
    shares_trunk_row = False
    trunk_pass = COMPOSED_TRUNK

    def __init__(self, lora: LoraKind):
        self.lora = lora  # the kind whose bucket its rows join

    def bind(self, m, backbone, plan, shared):
        if m.shared is None:
            raise InvalidAdapter("a multitask adapter names the shared adaptation it rides on: "
                                 "add \"shared\": {\"name\": ..., \"version\": ...} to adapter.json")
        if shared is None:
            raise InvalidInput(f"task {m.name!r} rides on shared adaptation {m.shared.name!r}; "
                               "it loads from a store (register it with a server or a registry)")
        try:
            base = shared(m.shared.name, m.shared.version)
        except NotFound as exc:
            raise IncompatibleAdapter(f"task {m.name!r} rides on shared adaptation {m.shared.name!r}"
                                      f"@{(m.shared.version or 'active')[:12]}, which is not registered here "
                                      f"({exc.message}); "
                                      "register the shared adaptation first") from exc
        if not base.impl.provides_shared_trunk:
            raise IncompatibleAdapter(f"{m.shared.name!r} is a {base.kind} task, not a shared "
                                      "adaptation; name an adapter registered with kind 'shared_lora'")
        if base.backbone is not backbone:
            raise IncompatibleAdapter(f"shared adaptation {m.shared.name!r}@{base.version[:12]} runs on "
                                      f"backbone {base.backbone.name!r} but task {m.name!r} on "
                                      f"{backbone.name!r}; a task and its shared adaptation share one backbone")
        if base.version != m.shared.version:  # a prefix or none at registration: stored as the full id
            m = m.model_copy(update={"shared": m.shared.model_copy(update={"version": base.version})})
        return base, m

    def check(self, adir, m, backbone, plan) -> None:
        t = task_type(m.task_type)
        if t.generates or m.head is None:
            raise InvalidAdapter(f"a multitask adapter is a head on the shared adaptation's trunk; "
                                 f"task_type {m.task_type!r} with no 'head' cannot ride on one")
        t.check_head(m, adir.headers["head.safetensors"], backbone)

    def load(self, adir, m, backbone, plan):
        return load_tensors(adir.path / "head.safetensors"), plan.weights

    def nbytes(self, weights) -> int:
        return 0  # counted on the shared adaptation's entry

    def trunk_state(self, weights):
        return self.lora.trunk_state(weights)

    def cost_factor(self, weights, backbone) -> float:
        return self.lora.cost_factor(weights, backbone)
