"""A backbone's identity: a sha256 over its config and every weight tensor.

Every adapter records the fingerprint of the backbone it was trained on, and the
registry refuses an adapter whose fingerprint differs: the same name with other
weights would give silently wrong scores.
"""

from __future__ import annotations

import hashlib
import json

import torch

# Keys that change with the library version or the load call, not with the model.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype",
                         "architectures", "_commit_hash", "_attn_implementation_autoset",
                         "id2label", "label2id", "problem_type", "finetuning_task"}


def model_fingerprint(model: torch.nn.Module) -> str:
    """Return ``sha256:<hex>`` over the model's config and fp32 weights.

    >>> from adapters.backbones.tiny import tiny_text_model
    >>> model_fingerprint(tiny_text_model()).startswith("sha256:")
    True
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            t = t.float()  # fp16 on a GPU keeps the fp32 fingerprint it was trained against
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()
