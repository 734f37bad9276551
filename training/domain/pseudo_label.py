"""Self-training of a LoRA on the trunk from the source head's own pseudo-labels.

The source head is kept frozen (the "source hypothesis", as in SHOT: Liang, Hu & Feng,
"Do We Really Need to Access the Source Data?", ICML 2020); only LoRA factors on the trunk
learn, so the target inputs' features move towards where the source head is confident.
Each epoch:

1. every target input is scored by the current trunk (LoRA included) and the source head;
2. pseudo-labels are the predicted classes of the most confident ``keep_fraction`` of the
   rows *within each predicted class* (class-balanced self-training, Zou et al., ECCV 2018:
   one global threshold would keep mostly the easy majority class, and the trunk would drift
   towards predicting it everywhere);
3. one pass over the target inputs minimises cross-entropy on the kept rows plus
   ``entropy_weight`` times the mean prediction entropy over every row (entropy
   minimisation, Grandvalet & Bengio 2005), with the backbone's dropout on.

LoRA starts with ``B = 0``: before the first step the adapted version answers exactly as the
source version. The result is an ordinary ``lora`` adapter (PEFT files + the unchanged head).

Example::

    >>> import torch
    >>> keep = class_balanced_mask(torch.tensor([[.9, .1], [.6, .4], [.2, .8], [.45, .55]]), 0.5)
    >>> keep.tolist()
    [True, False, True, False]
"""

from __future__ import annotations

import random

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from adapters.errors import InvalidInput
from adapters.heads import Head
from training.domain.base import AdaptConfig, AdaptContext, Adapted
from training.finetune import encode, predict_probs
from training.lora import block_linear_targets, default_targets, resolve_targets, trainable_copy


def class_balanced_mask(probs: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """``[rows]`` bool: per predicted class of ``probs [rows, classes]``, its most confident
    ``keep_fraction`` of rows (at least one per predicted class)."""
    conf, pred = probs.max(-1)
    keep = torch.zeros(len(probs), dtype=torch.bool)
    for c in pred.unique():
        rows = (pred == c).nonzero().squeeze(1)
        k = max(1, round(keep_fraction * len(rows)))
        keep[rows[conf[rows].argsort(descending=True)[:k]]] = True
    return keep


def _batches(n: int, inputs: list, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled minibatches of similar length (shuffle, then sort chunks of 8 batches by
    input length: less padding, the same rows per epoch)."""
    order = list(range(n))
    rng.shuffle(order)
    chunk = batch_size * 8
    out = []
    for s in range(0, n, chunk):
        part = sorted(order[s:s + chunk], key=lambda i: len(str(inputs[i])))
        out += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


def _peft(ctx: AdaptContext, cfg: AdaptConfig):
    model = trainable_copy(ctx.backbone)
    targets = list(block_linear_targets(model) or default_targets(model))
    resolve_targets(model, targets)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets,
                      bias="none")
    return get_peft_model(model, lcfg), targets


def _set_train(peft_model, flag: bool) -> None:
    peft_model.eval()  # BatchNorm statistics stay frozen; dropout follows the flag
    for m in peft_model.modules():
        if isinstance(m, nn.Dropout):
            m.train(flag)


def self_train(ctx: AdaptContext, cfg: AdaptConfig) -> Adapted:
    """A LoRA trained on ``ctx.target_inputs`` under the frozen source head (see the module)."""
    if len(ctx.head.linear_layers()[-1].weight) < 2:
        raise InvalidInput("pseudo-labels need a classifier with at least 2 labels")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    peft_model, targets = _peft(ctx, cfg)
    head: Head = ctx.head.eval().requires_grad_(False)
    pooling, inputs, bb = ctx.manifest.head.pooling, ctx.target_inputs, ctx.backbone
    params = [p for p in peft_model.parameters() if p.requires_grad]
    steps = cfg.epochs * -(-len(inputs) // cfg.batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    kept_per_epoch, changed = [], []
    first = None
    for _ in range(cfg.epochs):
        _set_train(peft_model, False)
        probs = predict_probs(peft_model, head, bb, inputs, pooling, cfg.feature_batch_size)  # [n, classes]
        first = probs.argmax(-1) if first is None else first
        keep = class_balanced_mask(probs, cfg.keep_fraction)
        labels = probs.argmax(-1)
        kept_per_epoch.append(int(keep.sum()))
        changed.append(int((labels != first).sum()))
        _set_train(peft_model, True)
        for batch in _batches(len(inputs), inputs, cfg.batch_size, rng):
            logits = head(encode(peft_model, bb, [inputs[i] for i in batch], pooling))  # [b, classes]
            logp = logits.log_softmax(-1)
            entropy = -(logp.exp() * logp).sum(-1).mean()
            idx = torch.tensor(batch)
            mask = keep[idx]
            ce = (nn.functional.nll_loss(logp[mask], labels[idx][mask]) if mask.any()
                  else logits.sum() * 0.0)
            loss = ce + cfg.entropy_weight * entropy
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
    _set_train(peft_model, False)
    peft_model.requires_grad_(False)

    def predict(xs: list) -> torch.Tensor:
        return predict_probs(peft_model, head, bb, xs, pooling, cfg.feature_batch_size)

    n_params = sum(p.numel() for p in params)
    return Adapted(head, peft_model, predict, {
        "lora_targets": targets, "lora_parameters": n_params, "pseudo_labels_kept_per_epoch": kept_per_epoch,
        "predictions_changed_per_epoch": changed})
