"""``lora``: PEFT LoRA factors inside the trunk, applied per row, plus a head.

Files are PEFT's own ``adapter_config.json`` + ``adapter_model.safetensors``; the head is
``head.safetensors`` or, for a plain PEFT sequence-classification directory, its
``classifier`` / ``score`` module in ``modules_to_save``. Wraps :mod:`adapters.lora.weights`
(plan and load) and :mod:`adapters.lora.batch` (per-row deltas, merged weights). Loaded
versions are evictable: they live in the eviction cache (adapters.residency) within the memory budget.
"""

from __future__ import annotations

import torch

from adapters.errors import IncompatibleAdapter, InvalidAdapter, InvalidInput
from adapters.format.manifest import BackboneRef, HeadSpec, Manifest
from adapters.format.safetensors_io import load_tensors
from adapters.kinds.base import AdapterKind, RowState
from adapters.kinds.lora_rows import LoraRows
from adapters.kinds.trunk import COMPOSED_TRUNK
from adapters.lora import batch as lora_batch
from adapters.lora.weights import check_peft_config, load_lora_weights, plan_lora
from adapters.tasks import TASK_TYPES, for_peft_problem_type, output_names, task_type

# Which pooled features an ``AutoModelForSequenceClassification`` / image-classification
# model of this type feeds its ``classifier`` (so a plain PEFT adapter scores the same here).
SEQ_CLS_POOLING = {"bert": "pooler", "mobilenet_v2": "pooler", "vit": "cls", "convnext": "pooler",
                   "resnet": "pooler", "efficientnet": "pooler"}


def peft_head_prefix(extras) -> str | None:
    """The ``modules_to_save`` module that is a PEFT classifier's head: ``classifier``
    (BERT, ViT, MobileNet...) or ``score`` (decoder models), or None."""
    for prefix in ("classifier", "score"):
        if f"{prefix}.weight" in extras:
            return prefix
    return None


class LoraKind(AdapterKind):
    name = "lora"
    weight_files = ("adapter_config.json", "adapter_model.safetensors")
    marker_file = "adapter_config.json"
    evictable = True
    shares_trunk_row = False
    trunk_pass = COMPOSED_TRUNK

    def plan(self, adir, backbone):
        check_peft_config(adir.peft_config)
        return plan_lora(adir.headers["adapter_model.safetensors"], backbone.model, backbone.base_model_prefix)

    def fits(self, adir, backbone) -> None:
        plan_lora(adir.headers["adapter_model.safetensors"], backbone.model, backbone.base_model_prefix)

    def synthesise_manifest(self, adir, backbone, plan, name, names):
        if name is None:
            raise InvalidInput("a plain PEFT adapter has no adapter.json: pass name=<task name>")
        generator = _generation_type(adir.peft_config.get("task_type"))
        if generator is not None:  # CAUSAL_LM: the language model's own output layer, no head
            if names is not None:
                raise InvalidInput("a generation adapter has no labels; omit 'labels'")
            return Manifest(name=name, kind=self.name, task_type=generator.name, **generator.from_peft(0, None),
                            backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint,
                                                 source=backbone.spec.source),
                            preprocessing=backbone.preprocessing_settings(),
                            training={"source": "peft save_pretrained",
                                      "peft_task_type": adir.peft_config.get("task_type")})
        prefix = peft_head_prefix(plan.extras)
        if prefix is None:
            raise InvalidAdapter("this PEFT adapter has no 'classifier' in modules_to_save and no "
                                 "head.safetensors: there is nothing to score with")
        header = adir.headers["adapter_model.safetensors"]
        n = header[plan.extras[f"{prefix}.weight"]][1][0]
        if names is not None and len(names) != n:
            raise InvalidInput(f"labels has {len(names)} names but the classifier has {n} outputs")
        task = for_peft_problem_type(adir.peft_config.get("problem_type"), n,
                                     adir.peft_config.get("task_type"))
        # A per-token classifier (TOKEN_CLS) reads every token; a sequence classifier the
        # pooled features its transformers model feeds it.
        pooling = "tokens" if task.features == "tokens" else SEQ_CLS_POOLING.get(backbone.model_type)
        if pooling is None:
            raise IncompatibleAdapter(f"a PEFT classifier on model type {backbone.model_type!r} is not "
                                      "supported; ship head.safetensors with an adapter.json instead")
        return Manifest(name=name, kind=self.name, task_type=task.name, **task.from_peft(n, names),
                        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint,
                                             source=backbone.spec.source),
                        head=HeadSpec(pooling=pooling, input_dim=backbone.hidden_size),
                        preprocessing=backbone.preprocessing_settings(),
                        training={"source": "peft save_pretrained",
                                  "peft_task_type": adir.peft_config.get("task_type")})

    def check(self, adir, m, backbone, plan) -> None:
        if task_type(m.task_type).generates:
            problems = [f"{f}: a generation LoRA has no head" for f in adir.headers if f == "head.safetensors"]
            problems += [f"modules_to_save {k!r} is not applied to a language model"
                         for k in sorted(plan.extras)]
            InvalidAdapter.collect(problems, "generation LoRA")
            return
        n_out = len(output_names(m))
        if "head.safetensors" in adir.headers:  # the task type's head: pooled, per-token or dense
            task_type(m.task_type).check_head(m, adir.headers["head.safetensors"], backbone)
            return
        prefix = peft_head_prefix(plan.extras)
        if prefix is None or m.head is None or m.head.hidden:
            raise InvalidAdapter("a LoRA adapter needs head.safetensors or a linear 'classifier' in "
                                 "modules_to_save")
        shape = tuple(adir.headers["adapter_model.safetensors"][plan.extras[f"{prefix}.weight"]][1])
        if shape != (n_out, backbone.hidden_size):
            raise IncompatibleAdapter(f"classifier weight has shape {shape}, expected "
                                      f"({n_out} outputs, {backbone.hidden_size} features)")

    def load(self, adir, m, backbone, plan):
        lora = load_lora_weights(adir.path / "adapter_model.safetensors", adir.peft_config, plan)
        if task_type(m.task_type).generates:
            return {}, lora
        if "head.safetensors" in adir.headers:
            return load_tensors(adir.path / "head.safetensors"), lora
        prefix = peft_head_prefix(lora.extras)
        n_out = len(output_names(m))
        head = {"layers.0.weight": lora.extras[f"{prefix}.weight"],
                "layers.0.bias": lora.extras.get(f"{prefix}.bias", torch.zeros(n_out))}
        return head, lora

    def to_device(self, weights, backbone):
        weights = weights.to(backbone.device, backbone.dtype)
        with backbone.lock:
            lora_batch.ensure_hooked(backbone.model, weights.modules)
        return weights

    def nbytes(self, weights) -> int:
        return weights.nbytes

    def trunk_state(self, weights):
        return RowState(self, weights)

    def cost_factor(self, weights, backbone) -> float:
        """A plain row plus the low-rank products (their parameters over the trunk's: rank
        256 on every Linear of MiniLM-L6 adds ~0.5) plus the per-row gather, which PEFT's
        own unmerged forward shows costs about as much again as the trunk at small ranks
        (NOTES: 0.51x throughput at r=8)."""
        trunk = sum(p.numel() for p in backbone.model.parameters()) or 1
        lora = sum(m.A.numel() + m.B.numel() for m in weights.modules.values())
        return 2.0 + lora / trunk

    def batch(self, backbone, weights):
        return LoraRows(backbone.model, weights)

    def forget(self, weights) -> None:
        """Drop the merged weights and factor stacks built from ``weights``."""
        for cache in (lora_batch.MERGED, lora_batch.LORA_STACKS):
            cache.forget(weights)


def _generation_type(peft_task_type: str | None):
    """The generating task type that claims a PEFT ``task_type`` (CAUSAL_LM), or None."""
    return next((t for t in TASK_TYPES.values() if t.generates and peft_task_type in t.peft_task_types), None)
