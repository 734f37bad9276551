"""Builders for real adapter directories on tiny backbones (test data, not product code).

Head adapters go through the product's own ``write_head_adapter``; LoRA adapters are
written by PEFT's own ``save_pretrained`` so the tests exercise the real file format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.backbones.base import Backbone
from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
from adapters.heads import Head


def head_adapter(folder: Path, backbone: Backbone, name: str, labels=("neg", "pos"), seed: int = 0,
                 hidden=(), pooling: str | None = None, task_type: str = "single_label") -> Path:
    """A randomly initialised (seeded) head adapter directory for ``backbone``."""
    torch.manual_seed(seed)
    spec = HeadSpec(pooling=pooling or backbone.default_pooling, input_dim=backbone.hidden_size,
                    hidden=list(hidden))
    head = Head(spec, len(labels))
    for p in head.parameters():  # big enough weights that labels differ between seeds
        torch.nn.init.normal_(p, std=2.0)
    manifest = Manifest(name=name, kind="head", task_type=task_type, labels=list(labels),
                        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                        head=spec, preprocessing=backbone.preprocessing_settings(),
                        metrics={"val_accuracy": 0.5})
    return write_head_adapter(folder, manifest, head.state_for_file(), card=f"# {name}\n")


def peft_seq_cls_model(backbone_path: str, num_labels: int = 2, seed: int = 0, r: int = 4,
                       targets=("query", "value"), **lora_kwargs):
    """PEFT's own LoRA model on ``AutoModelForSequenceClassification``, weights randomised."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(backbone_path, num_labels=num_labels)
    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=2 * r, target_modules=list(targets),
                     **lora_kwargs)
    model = get_peft_model(base, cfg)
    with torch.no_grad():  # PEFT initialises B to zero: randomise so the delta matters
        for n, p in model.named_parameters():
            if "lora_" in n or "classifier" in n:
                p.normal_(0, 0.5)
    return model.eval()


def peft_lora_dir(folder: Path, backbone_path: str, num_labels: int = 2, seed: int = 0, **kw) -> Path:
    """A plain PEFT ``save_pretrained`` directory (no adapter.json)."""
    model = peft_seq_cls_model(backbone_path, num_labels, seed, **kw)
    model.save_pretrained(folder)
    return Path(folder)


def regression_head(folder, backbone, name, outputs=("rating",), scaling=None, seed=0, hidden=()):
    """A randomly initialised (seeded) regression head adapter; returns the folder and the head."""
    torch.manual_seed(seed)
    spec = HeadSpec(pooling="mean", input_dim=backbone.hidden_size, hidden=list(hidden))
    head = Head(spec, len(outputs))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=2.0)
    m = Manifest(name=name, kind="head", task_type="regression", outputs=list(outputs),
                 target_scaling=scaling, backbone=BackboneRef(name=backbone.name,
                                                              fingerprint=backbone.fingerprint),
                 head=spec, preprocessing=backbone.preprocessing_settings())
    write_head_adapter(folder, m, head.state_for_file())
    return folder, head


def peft_probs(model, backbone, texts):
    """PEFT's own model's class probabilities for ``texts`` (the reference LoRA scores)."""
    enc = backbone.preprocessor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**enc).logits, -1)


def peft_causal_lm_dir(folder: Path, backbone_path: str, seed: int = 0, r: int = 4,
                       targets=("q_proj", "v_proj"), std: float = 0.5, **lora_kwargs) -> Path:
    """A plain PEFT ``CAUSAL_LM`` LoRA directory (``save_pretrained``) on a causal LM folder,
    its factors randomised (PEFT starts B at zero) so the adapter changes the tokens."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(backbone_path)
    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=2 * r, target_modules=list(targets),
                     **lora_kwargs)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_(0, std)
    model.save_pretrained(folder)
    return Path(folder)


def generation_manifest_dir(folder: Path, backbone, name: str, kind: str = "prompt",
                            **generation) -> Path:
    """A generation task's ``adapter.json`` (kind ``prompt``: no weights) in ``folder``."""
    from adapters.format.adapter_dir import write_manifest
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, Manifest(name=name, kind=kind, task_type="generation",
                                    backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                                    generation=generation))
    return folder
