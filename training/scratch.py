"""The ``scratch`` baseline: the backbone's architecture from random weights, trained end to end.

Same config (layers, widths, tokenizer / image size), same head and pooling, same loop as
LoRA; only the pretrained weights are missing. It measures what transfer learning buys.
The result is a report (metrics, card, plots), not an adapter: its trunk is not the
frozen backbone the server holds, so it cannot be served there.
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoConfig, AutoModel

from adapters.backbones.base import Backbone
from adapters.heads import Head
from training.config import TrainConfig
from training.data import LabelledData
from training.finetune import Loop, predict_probs, run_loop
from training.fitted import FitOutput
from training.probe import head_spec
from training.tasks import training_task


def fit_scratch(backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig) -> FitOutput:
    """Random-init trunk + head trained on ``train``, early-stopped on ``val``."""
    spec = head_spec(cfg, backbone)
    torch.manual_seed(cfg.seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(backbone.source_path)).to(backbone.device)
    head = Head(spec, len(train.label_names)).to(backbone.device)
    params = list(model.parameters()) + list(head.parameters())

    def set_train(flag: bool) -> None:
        model.train(flag)  # dropout and BatchNorm statistics are part of training here
        head.train(flag)

    def state() -> dict:
        return {"model": copy.deepcopy(model.state_dict()), "head": copy.deepcopy(head.state_dict())}

    def load(s: dict) -> None:
        model.load_state_dict(s["model"])
        head.load_state_dict(s["head"])

    hist = run_loop(Loop(model, head, params, set_train, state, load), backbone, train, val, cfg,
                    spec.pooling, "scratch")

    def predict(inputs: list) -> torch.Tensor:
        return predict_probs(model, head, backbone, inputs, spec.pooling, cfg.feature_batch_size,
                             training_task(cfg.task_type))

    n_params = sum(p.numel() for p in params)
    return FitOutput(head.requires_grad_(False), hist, predict, spec.pooling, servable=False,
                     notes={"trained_parameters": n_params})
