"""The LoRA loop for a generation task: PEFT ``CAUSAL_LM`` LoRA on a copy of the frozen LM.

Per epoch: length-bucketed batches (:mod:`training.generation.batches`), AdamW with a
warm-up then linear decay, gradient clipping; then the validation loss (mean cross-entropy
per completion token) and the validation chrF of greedy outputs on up to ``eval_limit``
validation examples. The epoch kept is the one with the best validation chrF (``select:
headline``, the default), the lowest validation loss (``loss``) or the last. A wall-clock
budget (``max_train_minutes``) stops training at the first step past it; that state is scored
like an epoch's end.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from adapters.format.manifest import GenerationSpec
from training.config import TrainConfig
from training.generation.batches import collate, length_buckets
from training.generation.data import GenerationData
from training.generation.decode import greedy_texts
from training.generation.encode import Encoded, encode
from training.generation.metrics import generation_scores
from training.progress import LAST_EPOCH, LOWEST_LOSS, Progress, highest

log = logging.getLogger("taskswap.training")

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
"""The attention projections of Llama-like models (SmolLM2, Qwen2, Mistral...)."""


@dataclass
class GenerationHistory:
    """Per-epoch curves; ``best_epoch`` is 1-based (the LoRA weights that were kept)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_chrf: list[float] = field(default_factory=list)
    best_epoch: int = 0
    kept_by: str = ""  # the selection rule that chose best_epoch, in words (training.progress)
    steps: int = 0
    tokens_seen: int = 0
    time_capped: bool = False

    def to_dict(self) -> dict:
        return {"train_loss": self.train_loss, "val_loss": self.val_loss, "val_chrf": self.val_chrf,
                "best_epoch": self.best_epoch, "kept_by": self.kept_by, "steps": self.steps, "tokens_seen": self.tokens_seen,
                "time_capped": self.time_capped}


@dataclass
class GenerationFit:
    peft_model: object
    """The PEFT model holding the kept epoch's LoRA weights (eval mode)."""
    history: GenerationHistory
    targets: list[str]


def lora_targets(model, wanted: list[str] | None) -> list[str]:
    """``wanted`` or :data:`DEFAULT_TARGETS`, keeping the names the model has (PEFT matches suffixes)."""
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    chosen = list(wanted or DEFAULT_TARGETS)
    found = [t for t in chosen if t in names]
    if not found:
        raise ValueError(f"none of the LoRA targets {chosen} is a Linear of this model; "
                         f"pass --lora-targets from {sorted(names)[:12]}")
    return found


def _val_loss(model, encoded: list[Encoded], pad_id: int, batch_size: int) -> float:
    """Mean cross-entropy per completion token over ``encoded``."""
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for batch in length_buckets([len(e.ids) for e in encoded], batch_size, seed=None):
            b = collate([encoded[i] for i in batch], pad_id)
            n = int((b["labels"][:, 1:] != -100).sum())
            total += float(model(**b).loss) * n
            count += n
    model.train()
    return total / max(count, 1)


def fit_generation_lora(backbone, train: GenerationData, val: GenerationData, spec: GenerationSpec,
                        cfg: TrainConfig, eval_limit: int = 64, max_length: int = 256) -> GenerationFit:
    """Train a LoRA on ``train`` for the task ``spec`` describes; score and select on ``val``."""
    tok = backbone.tokenizer
    eos = backbone.eos_token_ids[0] if tok.eos_token_id is None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    enc_train = [encode(e, spec, tok, eos, max_length) for e in train.examples]
    enc_val = [encode(e, spec, tok, eos, max_length) for e in val.examples]
    val_eval = val.sample(eval_limit, cfg.seed).examples
    max_new = min(spec.max_new_tokens, max(len(tok(e.completion)["input_ids"]) for e in val_eval) * 2 + 8)

    base = copy.deepcopy(backbone.model).float().requires_grad_(False)  # the served model stays untouched
    targets = lora_targets(base, cfg.lora_targets)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r,
                                            lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                            target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(enc_train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = int(total * cfg.warmup_fraction)

    def lr_factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        return (step + 1) / max(warm, 1) if step < warm else max(0.0, (total - step) / max(total - warm, 1))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    hist = GenerationHistory()
    select = cfg.select or "headline"
    hist.kept_by = {"headline": highest("chrF"), "loss": LOWEST_LOSS, "last": LAST_EPOCH}[select]
    progress = Progress("generation lora", cfg.epochs, "chrF", cfg.progress)
    best_score, best_state = None, None
    deadline = time.monotonic() + cfg.max_train_minutes * 60 if cfg.max_train_minutes else None
    model.train()
    for epoch in range(cfg.epochs):
        losses = []
        with progress.epoch(epoch + 1, steps_per_epoch) as bar:
            for batch in length_buckets([len(e.ids) for e in enc_train], cfg.batch_size, seed=cfg.seed + epoch):
                b = collate([enc_train[i] for i in batch], pad)
                loss = model(**b).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.step(losses[-1])
                hist.steps += 1
                hist.tokens_seen += int(b["attention_mask"].sum())
                if deadline is not None and time.monotonic() > deadline:
                    hist.time_capped = True
                    break
        hist.train_loss.append(sum(losses) / len(losses))
        hist.val_loss.append(_val_loss(model, enc_val, pad, cfg.batch_size))
        hyps = greedy_texts(model, tok, val_eval, spec, backbone.eos_token_ids, max_new)
        hist.val_chrf.append(generation_scores(hyps, [e.completion for e in val_eval])["chrf"])
        score = {"headline": (hist.val_chrf[-1], -hist.val_loss[-1]), "loss": (-hist.val_loss[-1],),
                 "last": (epoch,)}[select]
        log.info("epoch %d: train loss %.4f, val loss %.4f, val chrF %.2f", epoch + 1, hist.train_loss[-1],
                 hist.val_loss[-1], hist.val_chrf[-1])
        progress.epoch_done(epoch + 1, hist.train_loss[-1], hist.val_loss[-1], hist.val_chrf[-1],
                            "stopped by max_train_minutes" if hist.time_capped else "")
        if best_score is None or score > best_score:
            best_score, hist.best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        if hist.time_capped:
            break
    progress.kept(hist.best_epoch, len(hist.train_loss), hist.kept_by)
    set_peft_model_state_dict(model, best_state)
    model.eval()
    return GenerationFit(model, hist, targets)
