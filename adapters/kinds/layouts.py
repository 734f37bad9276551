"""How a model type splits into stem -> blocks -> finish, run piecewise on ``[rows, ...]`` tensors.

A BERT-like encoder's blocks are ``encoder.layer.{i}``; a MobileNetV2's are its
inverted-residual ``layer.{i}``, the last one together with the final ``conv_1x1``. The
piecewise trunk pass (:mod:`adapters.kinds.piecewise`) runs a chunk through these pieces
when some of its rows leave the frozen trunk at a block (top layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from transformers.masking_utils import create_bidirectional_mask

from adapters.backbones.feature_names import map_strides
from adapters.errors import IncompatibleAdapter


class Layout:
    """Stem -> blocks -> finish of one model type, run piecewise on ``[rows, ...]`` tensors."""

    def block_modules(self, model: nn.Module) -> list[list[str]]:
        """Per block, the module names (relative to the backbone model) it is made of."""
        raise NotImplementedError

    def stem(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def run_block(self, mods: list[nn.Module], h: torch.Tensor, mask: torch.Tensor | None,
                  model: nn.Module, params: list[dict] | None = None, tap=None) -> torch.Tensor:
        """Run one block on ``h`` (the backbone's own modules, or ``params`` swapped into them);
        ``tap(t)``, when given, receives the block's entry of the model's ``hidden_states``."""
        raise NotImplementedError

    def hidden_index(self, block: int) -> int:
        """The index into the model's ``hidden_states`` of what ``block`` gives ``tap``."""
        raise NotImplementedError

    def block_of_hidden(self, index: int) -> int:
        """The block whose ``tap`` gives the model's ``hidden_states[index]``."""
        raise NotImplementedError

    def last_block_read(self, model: nn.Module, backbone, needs: set[str]) -> int:
        """The deepest block whose output a task reading ``needs`` sees: the block that makes
        the deepest spatial map read (``map:<stride>``), else the last block."""
        strides = map_strides(needs)
        if not strides:
            return len(self.block_modules(model)) - 1
        return self.block_of_hidden(backbone.feature_maps[max(strides)])

    def finish(self, model: nn.Module, h: torch.Tensor):
        """``last_hidden_state`` / ``pooler_output`` like the model's own output."""
        raise NotImplementedError


def _call(mod: nn.Module, params: dict | None, *args):
    return mod(*args) if params is None else functional_call(mod, params, args, strict=True)


class BertLayout(Layout):
    def block_modules(self, model):
        return [[f"encoder.layer.{i}"] for i in range(len(model.encoder.layer))]

    def stem(self, model, batch):
        return model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))

    def _mask(self, model, h, mask):
        # The mask BertModel.forward builds for its encoder (bidirectional, in the form the
        # configured attention implementation takes), through transformers' public masking
        # API; tests/unit/test_top_layers.py pins the piecewise forward to the model's own.
        if mask is None:
            return None
        return create_bidirectional_mask(config=model.config, inputs_embeds=h, attention_mask=mask)

    def run_block(self, mods, h, mask, model, params=None, tap=None):
        h = _call(mods[0], None if params is None else params[0], h, self._mask(model, h, mask))
        if tap is not None:
            tap(h)
        return h

    def hidden_index(self, block):
        return block + 1  # hidden_states[0] is the embeddings' output

    def block_of_hidden(self, index):
        return index - 1

    def finish(self, model, h):
        pooled = model.pooler(h) if getattr(model, "pooler", None) is not None else None
        return _Out(h, pooled)


class MobileNetV2Layout(Layout):
    def block_modules(self, model):
        n = len(model.layer)
        return [[f"layer.{i}"] for i in range(n - 1)] + [[f"layer.{n - 1}", "conv_1x1"]]

    def stem(self, model, batch):
        return model.conv_stem(batch["pixel_values"])

    def run_block(self, mods, h, mask, model, params=None, tap=None):
        for j, mod in enumerate(mods):
            h = _call(mod, None if params is None else params[j], h)
            if j == 0 and tap is not None:  # layer.{i}'s output; the last block's conv_1x1 is not a map
                tap(h)
        return h

    def hidden_index(self, block):
        return block  # hidden_states[i] is layer.{i}'s output (the stem's is not among them)

    def block_of_hidden(self, index):
        return index

    def finish(self, model, h):
        pooled = torch.flatten(model.pooler(h), 1) if model.pooler is not None else None
        return _Out(h, pooled)


@dataclass
class _Out:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None
    hidden_states: list | None = None  # the maps a piecewise pass was asked for (None elsewhere)


LAYOUTS: dict[str, Layout] = {"bert": BertLayout(), "roberta": BertLayout(), "mobilenet_v2": MobileNetV2Layout()}


def layout_of(backbone) -> Layout:
    lay = LAYOUTS.get(backbone.model_type)
    if lay is None:
        raise IncompatibleAdapter(f"top_layers adapters are not supported on model type "
                                  f"{backbone.model_type!r} (supported: {sorted(LAYOUTS)})")
    return lay


