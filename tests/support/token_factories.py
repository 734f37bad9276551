"""Builders for token-classification tests: a tiny BERT whose tokenizer splits unknown words
into many ``##`` sub-tokens, PEFT ``TOKEN_CLS`` directories and per-token head adapters."""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.backbones.base import BackboneSpec

_WORDS = ("the a is was and in of to new york city bank paris went john lives works at "
          "good movie plot").split()
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_LETTERS = [chr(c) for c in range(97, 123)] + list("0123456789.,!?'-")


def write_subword_backbone(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece vocabulary of a few words, the letters
    and their ``##`` continuations: any other word becomes one sub-token per letter."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _SPECIAL + _WORDS + _LETTERS + [f"##{c}" for c in _LETTERS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    assert len(tok("zurich")["input_ids"]) == 8, "the subword vocabulary did not load"
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def subword_spec(folder: str | Path, max_length: int = 16) -> BackboneSpec:
    return BackboneSpec(name="text", source=str(write_subword_backbone(folder)), max_length=max_length)


def peft_token_model(backbone_path: str, num_labels: int = 5, seed: int = 0, r: int = 4,
                     targets=("query", "value")):
    """PEFT's own LoRA model on ``AutoModelForTokenClassification``, weights randomised."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForTokenClassification
    torch.manual_seed(seed)
    base = AutoModelForTokenClassification.from_pretrained(backbone_path, num_labels=num_labels)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.TOKEN_CLS, r=r, lora_alpha=2 * r,
                                            target_modules=list(targets)))
    with torch.no_grad():  # PEFT initialises B to zero: randomise so the delta matters
        for n, p in model.named_parameters():
            if "lora_" in n or "classifier" in n:
                p.normal_(0, 0.5)
    return model.eval()


def peft_token_dir(folder: Path, backbone_path: str, num_labels: int = 5, seed: int = 0, **kw) -> Path:
    """A plain PEFT ``save_pretrained`` directory of a TOKEN_CLS model (no adapter.json)."""
    peft_token_model(backbone_path, num_labels, seed, **kw).save_pretrained(folder)
    return Path(folder)


def peft_token_probs(model, tokenizer, texts: list[str]) -> list[torch.Tensor]:
    """PEFT's per-token probabilities ``[tokens_i, labels]`` (every real token) per text."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**enc).logits, -1)  # [texts, seq, labels]
    return [p[i, enc["attention_mask"][i].bool()] for i in range(len(texts))]


def token_head_adapter(folder: Path, backbone, name: str, labels, seed: int = 0, hidden=()):
    """A ``head`` adapter of task type ``token_classification``, weights randomised."""
    from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
    from adapters.heads import Head
    torch.manual_seed(seed)
    spec = HeadSpec(pooling="tokens", input_dim=backbone.hidden_size, hidden=list(hidden))
    head = Head(spec, len(labels))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=1.0)
    m = Manifest(name=name, kind="head", task_type="token_classification", labels=list(labels),
                 backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                 head=spec, preprocessing=backbone.preprocessing_settings())
    return write_head_adapter(folder, m, head.state_for_file())
