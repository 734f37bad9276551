"""Token-level fitting for per-token task types: alignment, a head on frozen features, LoRA.

- **alignment**: each sentence is tokenised as pre-split words (``is_split_into_words``);
  a word's tag goes on its first sub-token, the other sub-tokens carry no target (as
  Hugging Face's token-classification examples do, and as the server reads words back);
- **head**: the frozen trunk runs once per split; the first sub-token's features of every
  word are the rows a linear/MLP head is fitted on (:func:`training.head_fit.fit_head`);
- **lora**: the head method first (warm start), then PEFT LoRA on a copy of the backbone
  and the head trained together with AdamW, early-stopped on validation loss.

The training methods (:mod:`training.methods`) call these; :mod:`training.tokens` runs them.
"""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, get_peft_model

from adapters.backbones.base import Backbone
from adapters.format import HeadSpec
from training.config import TrainConfig
from training.data.tokens import TokenData
from training.fitted import TokenFit
from training.head_fit import fit_head, train_epochs
from training.lora import default_targets, resolve_targets, trainable_copy, warm_start_config
from training.probe import head_fit_config
from training.tasks import training_task
from training.token_encoding import encode_words


# ---- alignment ------------------------------------------------------------------------
def word_features(model, backbone: Backbone, sentences: list[list[str]], batch_size: int
                  ) -> tuple[torch.Tensor, list[list[int]]]:
    """``[kept words, hidden]`` first-sub-token features of ``model`` (gradients flow when
    enabled) and, per sentence, the indices of the words kept (all unless cut)."""
    feats, kept = [], []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        enc, first, _ = encode_words(backbone, chunk)
        enc = {k: v.to(backbone.device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state  # [batch, seq, hidden]
        pos = first >= 0  # [batch, seq]
        feats.append(hidden[pos.to(hidden.device)].float())
        kept += [first[i][pos[i]].tolist() for i in range(len(chunk))]
    return torch.cat(feats), kept


def kept_data(data: TokenData, kept: list[list[int]]) -> TokenData:
    """``data`` restricted to the words the backbone saw (all of them unless cut)."""
    return TokenData([[s[j] for j in k] or ["?"] for s, k in zip(data.sentences, kept)],
                     [[t[j] for j in k] or [0] for t, k in zip(data.tags, kept)], data.label_names, data.source,
                     data.label_note)


# ---- fit ------------------------------------------------------------------------------
def _frozen_features(backbone: Backbone, data: TokenData, batch: int):
    with torch.no_grad():
        x, kept = word_features(backbone.model, backbone, data.sentences, batch)
    return x.cpu(), kept


def fit_token_head(backbone: Backbone, train: TokenData, val: TokenData, cfg: TrainConfig) -> TokenFit:
    """A head on frozen first-sub-token features."""
    task = training_task(cfg.task_type)
    spec = HeadSpec(pooling="tokens", input_dim=backbone.hidden_size, hidden=list(cfg.hidden),
                    activation=cfg.activation, normalize=cfg.normalize)
    tx, tk = _frozen_features(backbone, train, cfg.feature_batch_size)
    vx, vk = _frozen_features(backbone, val, cfg.feature_batch_size)
    fit = fit_head(spec, len(train.label_names), tx, task.targets(kept_data(train, tk)), vx,
                   task.targets(kept_data(val, vk)), head_fit_config(cfg), cfg.progress, task)

    def predict(data: TokenData):
        x, kept = _frozen_features(backbone, data, cfg.feature_batch_size)
        with torch.no_grad():
            return task.outputs(fit.head(x)), kept

    return TokenFit(fit.head, fit.history, predict)


def fit_token_lora(backbone: Backbone, train: TokenData, val: TokenData, cfg: TrainConfig) -> TokenFit:
    """LoRA + head, warm-started from :func:`fit_token_head`."""
    task = training_task(cfg.task_type)
    warm_head = fit_token_head(backbone, train, val, warm_start_config(cfg)).head
    torch.manual_seed(cfg.seed)
    model = trainable_copy(backbone)
    targets = list(cfg.lora_targets or default_targets(model))
    resolve_targets(model, targets)
    peft_model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                  lora_dropout=cfg.lora_dropout,
                                                  target_modules=targets, bias="none"))
    peft_model.eval()  # dropout off in the base; LoRA dropout is 0 by default
    head = copy.deepcopy(warm_head).requires_grad_(True).to(backbone.device)
    params = [p for p in peft_model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}

    def val_loss() -> tuple[float, float]:
        with torch.no_grad():
            x, kept = word_features(peft_model, backbone, val.sentences, cfg.feature_batch_size)
            y = task.targets(kept_data(val, kept)).to(x.device)
            logits = head(x)
        return float(task.loss(logits, y)), task.headline(logits, y)

    def batch_loss(idx: list[int]) -> tuple[torch.Tensor, int]:
        part = train.subset(idx)
        x, kept = word_features(peft_model, backbone, part.sentences, cfg.batch_size)
        y = task.targets(kept_data(part, kept)).to(x.device)
        return task.loss(head(x), y), len(y)

    def snapshot() -> dict:
        return {"lora": {n: p.detach().clone() for n, p in peft_model.named_parameters() if n in trainable},
                "head": copy.deepcopy(head.state_dict())}

    hist, stop = train_epochs(cfg, len(train), opt, batch_loss, val_loss, snapshot, head.train, "token lora")
    peft_model.load_state_dict(stop.state["lora"], strict=False)
    head.load_state_dict(stop.state["head"])
    head = head.eval().requires_grad_(False)

    def predict(data: TokenData):
        with torch.no_grad():
            x, kept = word_features(peft_model, backbone, data.sentences, cfg.feature_batch_size)
            return task.outputs(head(x)).cpu(), kept

    return TokenFit(head, hist, predict, peft_model=peft_model, lora_targets=targets)
