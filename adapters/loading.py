"""From a checked adapter directory to a servable :class:`LoadedAdapter`.

``prepare_adapter`` is the registration-time dry run: it picks the backbone, checks
fingerprint, preprocessing, head and LoRA shapes from headers alone, and writes a
complete ``adapter.json`` (plain PEFT directories get one synthesised). Only then
does ``load_adapter`` materialise tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapters.backbones.base import Backbone
from adapters.errors import IncompatibleAdapter, InvalidAdapter, InvalidInput
from adapters.format.adapter_dir import AdapterDir, read_adapter_dir, write_manifest
from adapters.format.manifest import BackboneRef, HeadSpec, Manifest
from adapters.format.safetensors_io import load_tensors
from adapters.heads import Head, build_head, check_head_header
from adapters.lora.batch import ensure_hooked
from adapters.lora.weights import LoraPlan, LoraWeights, check_peft_config, load_lora_weights, plan_lora

# Which pooled features an ``AutoModelForSequenceClassification`` / image-classification
# model of this type feeds its ``classifier`` (so a plain PEFT adapter scores the same here).
SEQ_CLS_POOLING = {"bert": "pooler", "mobilenet_v2": "pooler", "vit": "cls", "convnext": "pooler",
                   "resnet": "pooler", "efficientnet": "pooler"}


@dataclass
class LoadedAdapter:
    """One adapter version in memory, ready to serve. Immutable once built."""

    name: str
    version: str
    manifest: Manifest
    backbone: Backbone
    head: Head
    lora: LoraWeights | None
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def nbytes(self) -> int:
        head = sum(p.numel() * p.element_size() for p in self.head.parameters())
        return head + (self.lora.nbytes if self.lora else 0)


@dataclass
class Prepared:
    """The result of the dry run: everything needed to load, nothing loaded."""

    adir: AdapterDir
    manifest: Manifest
    backbone: Backbone
    plan: LoraPlan | None


def pick_backbone(adir: AdapterDir, backbones: dict[str, Backbone], requested: str | None) -> Backbone:
    if requested is not None:
        if requested not in backbones:
            raise InvalidInput(f"backbone {requested!r} is not served here (have {sorted(backbones)})")
        return backbones[requested]
    m = adir.manifest
    if m is not None:
        by_fp = [b for b in backbones.values() if m.backbone.fingerprint == b.fingerprint]
        if by_fp:
            return by_fp[0]
        if m.backbone.name in backbones:
            return backbones[m.backbone.name]
        raise IncompatibleAdapter(f"adapter was trained on backbone {m.backbone.name!r} "
                                  f"({(m.backbone.fingerprint or '?')[:19]}), which this server does not "
                                  f"serve (have {sorted(backbones)})")
    fits, why = [], []
    header = adir.headers["adapter_model.safetensors"]
    for b in backbones.values():
        try:
            plan_lora(header, b.model, b.base_model_prefix)
            fits.append(b)
        except (IncompatibleAdapter, InvalidAdapter) as exc:
            why.append(f"{b.name}: {exc.message}")
    if not fits:
        raise IncompatibleAdapter("this PEFT adapter fits no served backbone (" + "; ".join(why) + ")")
    if len(fits) > 1:
        raise InvalidInput("this PEFT adapter fits several backbones "
                           f"{[b.name for b in fits]}; pass backbone=<name>")
    return fits[0]


def _check_backbone(m: Manifest, backbone: Backbone) -> None:
    problems = []
    if m.backbone.fingerprint and m.backbone.fingerprint != backbone.fingerprint:
        problems.append(f"backbone fingerprint {m.backbone.fingerprint[:19]}... does not match "
                        f"backbone {backbone.name!r} ({backbone.fingerprint[:19]}...): it was trained "
                        "on other weights; retrain it on this backbone")
    size = m.preprocessing.get("image_size")
    own = backbone.preprocessing_settings().get("image_size")
    if size is not None and own is not None and not (
            isinstance(size, int) and not isinstance(size, bool)):
        problems.append(f"preprocessing.image_size must be an integer, got {size!r}")
    elif size is not None and own is not None and int(size) != int(own):
        problems.append(f"adapter was trained at image_size {size} but backbone {backbone.name!r} "
                        f"serves {own}")
    IncompatibleAdapter.collect(problems, "adapter")


def _classifier_head(plan: LoraPlan, backbone: Backbone) -> tuple[HeadSpec, int]:
    """The head of a plain PEFT sequence-classification adapter: its ``classifier`` module."""
    keys = {k for k in plan.extras if k.startswith(("classifier.", "score."))}
    prefix = "classifier" if "classifier.weight" in keys else "score"
    if f"{prefix}.weight" not in plan.extras:
        raise InvalidAdapter("this PEFT adapter has no 'classifier' in modules_to_save and no "
                             "head.safetensors: there is nothing to score with")
    pooling = SEQ_CLS_POOLING.get(backbone.model_type)
    if pooling is None:
        raise IncompatibleAdapter(f"a PEFT classifier on model type {backbone.model_type!r} is not "
                                  "supported; ship head.safetensors with an adapter.json instead")
    return HeadSpec(pooling=pooling, input_dim=backbone.hidden_size), len(keys)


def prepare_adapter(folder: Path, backbones: dict[str, Backbone], name: str | None = None,
                    labels: list[str] | None = None, backbone: str | None = None,
                    write: bool = True) -> Prepared:
    """Check an adapter folder against the served backbones and complete its manifest in place.

    ``name`` and ``labels`` override the manifest (and are required for plain PEFT folders
    when the manifest cannot supply them). ``write=False`` checks without writing
    (stored versions are immutable).
    """
    adir = read_adapter_dir(Path(folder))
    bb = pick_backbone(adir, backbones, backbone)
    plan = None
    if adir.kind == "lora":
        check_peft_config(adir.peft_config)
        plan = plan_lora(adir.headers["adapter_model.safetensors"], bb.model, bb.base_model_prefix)
    manifest = adir.manifest or _synthesise_manifest(adir, bb, plan, name, labels)
    updates = {}
    if name is not None and name != manifest.name:
        updates["name"] = name
    if labels is not None and labels != manifest.labels:
        updates["labels"] = labels
    if updates:
        manifest = Manifest.model_validate({**manifest.model_dump(), **updates})
    _check_backbone(manifest, bb)
    if "head.safetensors" in adir.headers:
        check_head_header(manifest.head, len(manifest.labels), adir.headers["head.safetensors"],
                          bb.hidden_size, bb.available_poolings)
    elif adir.kind == "lora":
        _check_classifier_shapes(plan, adir, manifest, bb)
    if write:
        write_manifest(adir.path, manifest)
    adir.manifest = manifest
    return Prepared(adir, manifest, bb, plan)


def _check_classifier_shapes(plan: LoraPlan, adir: AdapterDir, m: Manifest, bb: Backbone) -> None:
    header = adir.headers["adapter_model.safetensors"]
    key_w = plan.extras.get("classifier.weight") or plan.extras.get("score.weight")
    if key_w is None or m.head.hidden:
        raise InvalidAdapter("a LoRA adapter needs head.safetensors or a linear 'classifier' in "
                             "modules_to_save")
    shape = tuple(header[key_w][1])
    if shape != (len(m.labels), bb.hidden_size):
        raise IncompatibleAdapter(f"classifier weight has shape {shape}, expected "
                                  f"({len(m.labels)} labels, {bb.hidden_size} features)")


def _synthesise_manifest(adir: AdapterDir, bb: Backbone, plan: LoraPlan, name: str | None,
                         labels: list[str] | None) -> Manifest:
    if name is None:
        raise InvalidInput("a plain PEFT adapter has no adapter.json: pass name=<task name>")
    spec, _ = _classifier_head(plan, bb)
    header = adir.headers["adapter_model.safetensors"]
    key_w = plan.extras.get("classifier.weight") or plan.extras.get("score.weight")
    n = header[key_w][1][0]
    if labels is not None and len(labels) != n:
        raise InvalidInput(f"labels has {len(labels)} names but the classifier has {n} outputs")
    return Manifest(name=name, kind="lora", labels=labels or [f"LABEL_{i}" for i in range(n)],
                    backbone=BackboneRef(name=bb.name, fingerprint=bb.fingerprint, source=bb.spec.source),
                    head=spec, preprocessing=bb.preprocessing_settings(),
                    training={"source": "peft save_pretrained",
                              "peft_task_type": adir.peft_config.get("task_type")})


def load_adapter(prep: Prepared, version: str) -> LoadedAdapter:
    """Materialise the tensors of a prepared adapter on its backbone's device."""
    start = time.perf_counter()
    m, bb, adir = prep.manifest, prep.backbone, prep.adir
    lora = None
    if adir.kind == "lora":
        lora = load_lora_weights(adir.path / "adapter_model.safetensors", adir.peft_config, prep.plan)
    if "head.safetensors" in adir.headers:
        head_tensors = load_tensors(adir.path / "head.safetensors")
    else:
        prefix = "classifier" if "classifier.weight" in lora.extras else "score"
        head_tensors = {"layers.0.weight": lora.extras[f"{prefix}.weight"],
                        "layers.0.bias": lora.extras.get(f"{prefix}.bias",
                                                         torch.zeros(len(m.labels)))}
    head = build_head(m.head, len(m.labels), head_tensors).to(bb.device)
    if lora is not None:
        lora = lora.to(bb.device, bb.dtype)
        with bb.lock:
            ensure_hooked(bb.model, lora.modules)
    return LoadedAdapter(m.name, version, m, bb, head, lora, time.perf_counter() - start)
