"""A trainable copy of a backbone's weights, read again from its source and checked against
its fingerprint (the served model is never the one trained). Below every trainer: it imports
no task type, so the dense trainers (``training/dense/``) and the pooled ones share it."""

from __future__ import annotations

from torch import nn
from transformers import AutoModel

from adapters.backbones.base import Backbone
from adapters.backbones.fingerprint import model_fingerprint
from adapters.errors import IncompatibleAdapter


def trainable_copy(backbone: Backbone) -> nn.Module:
    """A fresh float32 copy of the backbone's weights, checked to be the same weights."""
    model = AutoModel.from_pretrained(backbone.source_path)
    if model_fingerprint(model) != backbone.fingerprint:
        raise IncompatibleAdapter(f"the weights at {backbone.source_path} changed since backbone "
                                  f"{backbone.name!r} was loaded; reload it and train again")
    return model.to(backbone.device).eval()
