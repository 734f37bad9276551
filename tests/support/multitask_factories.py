"""Builders for shared adaptations and the tasks riding on them (test data, not product code).

The LoRA factors are PEFT's own (``save_pretrained`` of a randomised LoRA, its classifier
dropped); the heads go through the product's ``write_head_adapter``. ``lora_task_dir``
writes the *same* LoRA and head as one ordinary ``lora`` task, the reference a task riding
on the shared adaptation must match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
from adapters.format.adapter_dir import write_manifest
from adapters.format.manifest import SharedRef
from adapters.heads import Head
from support.factories import peft_lora_dir

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def shared_lora_dir(folder: Path, backbone, name: str, seed: int = 0, r: int = 4) -> Path:
    """A shared adaptation: PEFT LoRA factors (no classifier) + adapter.json (kind shared_lora)."""
    folder = Path(folder)
    peft_lora_dir(folder, str(backbone.source_path), seed=seed, r=r)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k: v for k, v in tensors.items() if "lora_" in k}, str(folder / "adapter_model.safetensors"))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["modules_to_save"] = None
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    write_manifest(folder, Manifest(name=name, kind="shared_lora", task_type="trunk_adaptation",
                                    backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                                    preprocessing=backbone.preprocessing_settings()))
    return folder


def head_state(backbone, labels, seed: int, input_dim: int | None = None, pooling: str = "mean"):
    """``(spec, state)`` of a seeded random linear head."""
    torch.manual_seed(seed)
    spec = HeadSpec(pooling=pooling, input_dim=input_dim or backbone.hidden_size)
    head = Head(spec, len(labels))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=2.0)
    return spec, head.state_for_file()


def multitask_task_dir(folder: Path, backbone, name: str, shared: str, version: str,
                       labels=("neg", "pos"), seed: int = 0, input_dim: int | None = None) -> Path:
    """A task riding on ``shared@version``: adapter.json (kind multitask) + head.safetensors."""
    spec, state = head_state(backbone, labels, seed, input_dim)
    m = Manifest(name=name, kind="multitask", labels=list(labels), head=spec,
                 shared=SharedRef(name=shared, version=version),
                 backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                 preprocessing=backbone.preprocessing_settings())
    return write_head_adapter(folder, m, state)


def lora_task_dir(folder: Path, backbone, name: str, shared_folder: Path, labels=("neg", "pos"),
                  seed: int = 0) -> Path:
    """The same LoRA as ``shared_folder`` and the same head as ``multitask_task_dir(seed=...)``,
    as one ordinary ``lora`` task."""
    spec, state = head_state(backbone, labels, seed)
    m = Manifest(name=name, kind="lora", labels=list(labels), head=spec,
                 backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                 preprocessing=backbone.preprocessing_settings())
    write_head_adapter(folder, m, state)
    for f in PEFT_FILES:
        shutil.copy(Path(shared_folder) / f, Path(folder) / f)
    return Path(folder)
