"""Builders for real top-layers adapter directories on tiny backbones, and the reference
they must equal: the task's own fine-tuned model (a fresh ``AutoModel`` with the adapter's
blocks loaded into it) run alone, pooled, through the head."""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.backbones.base import Backbone, Features
from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.heads import Head, build_head
from adapters.kinds.top_layers import blocks_state_of, num_blocks, write_top_layers_adapter


def fine_tuned_model(backbone: Backbone, k: int, seed: int) -> torch.nn.Module:
    """The backbone's model with its last ``k`` blocks perturbed (seeded): a stand-in for
    a fine-tuned copy, different enough that every task answers differently."""
    from transformers import AutoModel
    model = AutoModel.from_pretrained(backbone.source_path).eval()
    n = num_blocks(model, backbone.model_type)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in blocks_state_of(model, backbone.model_type, list(range(n - k, n))).items():
            if t.is_floating_point() and "running_var" not in name:
                t.add_(torch.randn(t.shape, generator=g) * 0.3 * (t.std() if t.numel() > 1 else 1))
    return model


def top_layers_adapter(folder: Path, backbone: Backbone, name: str, k: int, seed: int = 0,
                       labels=("neg", "pos"), pooling: str | None = None,
                       fingerprint: str | None = "same") -> Path:
    model = fine_tuned_model(backbone, k, seed)
    n = num_blocks(model, backbone.model_type)
    torch.manual_seed(seed)
    spec = HeadSpec(pooling=pooling or backbone.default_pooling, input_dim=backbone.hidden_size)
    head = Head(spec, len(labels))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=2.0)
    blocks = list(range(n - k, n))
    m = Manifest(name=name, kind="top_layers", labels=list(labels),
                 backbone=BackboneRef(name=backbone.name,
                                      fingerprint=backbone.fingerprint if fingerprint == "same" else fingerprint),
                 head=spec, preprocessing=backbone.preprocessing_settings(),
                 top_layers={"blocks": blocks})
    return write_top_layers_adapter(folder, m, blocks_state_of(model, backbone.model_type, blocks),
                                    head.state_for_file(), card=f"# {name}\n")


def reference_probs(backbone: Backbone, k: int, seed: int, folder: Path, inputs: list) -> torch.Tensor:
    """The fine-tuned model alone: full HF forward, the head on its pooled features."""
    from adapters.format.safetensors_io import load_tensors
    from adapters.plugin_checks import read_adapter_dir
    model = fine_tuned_model(backbone, k, seed)
    m = read_adapter_dir(Path(folder)).manifest
    head = build_head(m.head, len(m.labels), load_tensors(Path(folder) / "head.safetensors"))
    batch = backbone.preprocess(inputs)
    with torch.no_grad():
        out = model(**batch)
        feats = Features(out, batch.get("attention_mask")).get(m.head.pooling)
        return torch.softmax(head(feats), -1)
