"""Training for task types with per-token heads (``token_classification``): head and LoRA.

The same phases as :mod:`training.trainer` (check → split → fit → evaluate → export) over
sentences of words instead of single examples:

- **alignment**: each sentence is tokenised as pre-split words (``is_split_into_words``);
  a word's tag goes on its first sub-token, the other sub-tokens carry no target (as
  Hugging Face's token-classification examples do, and as the server reads words back);
- **head**: the frozen trunk runs once per split; the first sub-token's features of every
  word are the rows a linear/MLP head is fitted on (:func:`training.heads.fit_head`);
- **lora**: the head method first (warm start), then PEFT LoRA on a copy of the backbone
  and the head trained together with AdamW, early-stopped on validation loss;
- **scratch** (a baseline, not an adapter): a BiGRU tagger from random weights on the same
  sub-tokens and alignment (:mod:`training.token_scratch`); its folder holds the card,
  metrics and plots only;
- **export**: the adapter folder through the same format code as every other task type
  (``head.pooling: "tokens"``), metrics from the task type (seqeval entity P/R/F1 per type,
  token accuracy), model card with the per-type table and a confusion matrix over tags.

Words past the backbone's ``max_length`` tokens of a sentence are neither trained on nor
scored (the count is in the card); the server tags such texts whole over stride windows.

    >>> from adapters.backbones.tiny import tiny_backbone_spec
    >>> from training.config import TrainConfig
    >>> from training.data.tokens import TokenData
    >>> d = TokenData([["good", "film"], ["bad", "plot"]] * 6, [[1, 0], [0, 1]] * 6, ["O", "X"], "toy")
    >>> r = train_tokens(d, tiny_backbone_spec("text", "/tmp/tiny-doc"),
    ...                  TrainConfig(name="toy", task_type="token_classification", epochs=3,
    ...                              progress=False), "/tmp/toy-tagger")
    >>> r.manifest.head.pooling, sorted(r.metrics)
    ('tokens', ['train', 'validation'])
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.heads import Head
from adapters.tasks import task_type
from training.card import CardFacts, render_card
from training.config import TrainConfig
from training.data.tokens import TokenData
from training.export import prepare_output_dir, write_head_dir, write_lora_dir, write_metrics, write_report_dir
from training.heads import History, fit_head, train_epochs
from training.lora import default_targets, resolve_targets, trainable_copy, warm_start_config
from training.plots import plot_loss_curves
from training.probe import head_fit_config
from training.token_encoding import encode_words
from training.token_scratch import fit_token_scratch

log = logging.getLogger("taskswap.training")


@dataclass
class TokenTrainResult:
    path: Path
    config: TrainConfig
    manifest: Manifest | None  # None for a scratch baseline (a report, not an adapter)
    metrics: dict
    history: History
    seconds: float
    truncated_words: int

    @property
    def servable(self) -> bool:
        return self.manifest is not None


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


def _kept_data(data: TokenData, kept: list[list[int]]) -> TokenData:
    """``data`` restricted to the words the backbone saw (all of them unless cut)."""
    return TokenData([[s[j] for j in k] or ["?"] for s, k in zip(data.sentences, kept)],
                     [[t[j] for j in k] or [0] for t, k in zip(data.tags, kept)], data.label_names, data.source,
                     data.label_note)


# ---- fit ------------------------------------------------------------------------------
def _frozen_features(backbone: Backbone, data: TokenData, batch: int):
    with torch.no_grad():
        x, kept = word_features(backbone.model, backbone, data.sentences, batch)
    return x.cpu(), kept


def fit_token_head(backbone: Backbone, train: TokenData, val: TokenData, cfg: TrainConfig):
    """``(head, history, predict)``: a head on frozen first-sub-token features."""
    task = task_type(cfg.task_type)
    spec = HeadSpec(pooling="tokens", input_dim=backbone.hidden_size, hidden=list(cfg.hidden),
                    activation=cfg.activation, normalize=cfg.normalize)
    tx, tk = _frozen_features(backbone, train, cfg.feature_batch_size)
    vx, vk = _frozen_features(backbone, val, cfg.feature_batch_size)
    fit = fit_head(spec, len(train.label_names), tx, task.targets(_kept_data(train, tk)), vx,
                   task.targets(_kept_data(val, vk)), head_fit_config(cfg), cfg.progress, task)

    def predict(data: TokenData):
        x, kept = _frozen_features(backbone, data, cfg.feature_batch_size)
        with torch.no_grad():
            return task.outputs(fit.head(x)), kept

    return fit.head, fit.history, predict


def fit_token_lora(backbone: Backbone, train: TokenData, val: TokenData, cfg: TrainConfig):
    """``(head, history, predict, peft_model, targets)``: LoRA + head, warm-started."""
    from peft import LoraConfig, get_peft_model  # PEFT (~1 s to import) only when a LoRA is fitted

    task = task_type(cfg.task_type)
    warm_head, _, _ = fit_token_head(backbone, train, val, warm_start_config(cfg))
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
            y = task.targets(_kept_data(val, kept)).to(x.device)
            logits = head(x)
        return float(task.loss(logits, y)), task.headline(logits, y)

    def batch_loss(idx: list[int]) -> tuple[torch.Tensor, int]:
        part = train.subset(idx)
        x, kept = word_features(peft_model, backbone, part.sentences, cfg.batch_size)
        y = task.targets(_kept_data(part, kept)).to(x.device)
        return task.loss(head(x), y), len(y)

    def snapshot() -> dict:
        return {"lora": {n: p.detach().clone() for n, p in peft_model.named_parameters() if n in trainable},
                "head": copy.deepcopy(head.state_dict())}

    hist, stop = train_epochs(cfg, len(train), opt, batch_loss, val_loss, snapshot, head.train)
    peft_model.load_state_dict(stop.state["lora"], strict=False)
    head.load_state_dict(stop.state["head"])
    head = head.eval().requires_grad_(False)

    def predict(data: TokenData):
        with torch.no_grad():
            x, kept = word_features(peft_model, backbone, data.sentences, cfg.feature_batch_size)
            return task.outputs(head(x)).cpu(), kept

    return head, hist, predict, peft_model, targets


# ---- the run --------------------------------------------------------------------------
def train_tokens(data: TokenData, backbone: Backbone | BackboneSpec, cfg: TrainConfig, out_dir,
                 val: TokenData | None = None, test: TokenData | None = None) -> TokenTrainResult:
    """Train ``cfg.method`` (head | lora) on tagged sentences and write the adapter folder."""
    task = task_type(cfg.task_type)
    problems = task.check_data(data)
    if cfg.method not in ("head", "lora", "scratch"):
        problems.append(f"method {cfg.method!r} is not available for {task.name}; use head, lora "
                        "or scratch (a baseline)")
    for split, d in (("validation", val), ("test", test)):
        if d is not None and d.label_names != data.label_names:
            problems.append(f"{split} tags {d.label_names} differ from training tags {data.label_names}; "
                            "pass the same --labels to both")
    if val is None and len(data) < 4:
        problems.append(f"only {len(data)} sentences: too few to carve off a validation split")
    InvalidInput.collect(problems, "data")
    if isinstance(backbone, BackboneSpec):
        backbone = load_backbone(backbone)
    if backbone.modality != "text":
        raise InvalidInput(f"{task.name} needs a text backbone; {backbone.name!r} takes {backbone.modality}")
    out = prepare_output_dir(Path(out_dir))
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    fit_data, val_data = (data, val) if val is not None else data.split(1 - cfg.val_fraction, cfg.seed)
    peft_model, targets, head, n_params = None, [], None, None
    if cfg.method == "head":
        head, hist, predict = fit_token_head(backbone, fit_data, val_data, cfg)
    elif cfg.method == "scratch":
        hist, predict, n_params = fit_token_scratch(backbone, fit_data, val_data, cfg)
    else:
        head, hist, predict, peft_model, targets = fit_token_lora(backbone, fit_data, val_data, cfg)
    seconds = time.perf_counter() - start
    splits = {"train": fit_data, "validation": val_data} | ({"test": test} if test is not None else {})
    metrics, outputs, cut = {}, {}, 0
    for split, d in splits.items():
        probs, kept = predict(d)
        scored = _kept_data(d, kept)
        cut += sum(len(s) for s in d.sentences) - sum(len(k) for k in kept)
        metrics[split] = task.metrics(scored, probs, task.eval_loss(probs, scored))
        outputs[split] = (scored, probs)
    manifest = _export(out, cfg, backbone, splits, head, hist, metrics, outputs, seconds, peft_model,
                       targets, cut, carved=val is None, n_params=n_params)
    log.info("trained %s (%s tagger) in %.1fs: val entity F1 %.4f, token accuracy %.4f", cfg.name,
             cfg.method, seconds, metrics["validation"].f1, metrics["validation"].accuracy)
    return TokenTrainResult(out, cfg, manifest, metrics, hist, seconds, cut)


def _export(out, cfg, backbone, splits, head: Head | None, hist: History, metrics, outputs, seconds,
            peft_model, targets, cut: int, carved: bool, n_params: int | None = None) -> Manifest | None:
    task = task_type(cfg.task_type)
    train = splits["train"]
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    hyper = {**cfg.hyperparameters(), "pooling": "tokens"}
    if targets:
        hyper["lora_targets"] = targets
    info = {"method": cfg.method, "hyperparameters": hyper, "data": train.source,
            "examples": {s: len(d) for s, d in splits.items()}, "tag_counts": train.tag_counts(),
            "best_epoch": hist.best_epoch, "epochs_run": len(hist.train_loss),
            "stopped_early": hist.stopped_early, "seconds": round(seconds, 2), "finished_at": finished,
            "torch": torch.__version__, "words_past_max_length": cut}
    if n_params is not None:
        info["trained_parameters"] = n_params
    report = "test" if "test" in metrics else "validation"
    lines = [f"source: {train.source}", f"text, {len(train.label_names)} tags"]
    if train.label_note:
        lines.append(f"**{train.label_note}**")
    for s, d in splits.items():
        lines.append(f"{s}: {len(d)} sentences, {sum(len(x) for x in d.sentences)} words ("
                     + ", ".join(f"{k} {v}" for k, v in d.tag_counts().items()) + ")")
    if carved:
        lines.append(f"validation carved off the training sentences ({cfg.val_fraction:.0%}, seed {cfg.seed})")
    lines.append(f"words past the backbone's max_length ({backbone.preprocessor.max_length} tokens), "
                 f"not trained on or scored: {cut}")
    scored, probs = outputs[report]
    plot = task.plot(scored, probs, metrics[report], out, cfg.name)
    facts = CardFacts(name=cfg.name, method=cfg.method, task_type=task.name, labels=list(train.label_names),
                      backbone_name=backbone.name, backbone_source=backbone.spec.source,
                      fingerprint=backbone.fingerprint, preprocessing=backbone.preprocessing_settings(),
                      data=lines, hyper=hyper, metrics=metrics, report_split=report,
                      best_epoch=hist.best_epoch, epochs_run=len(hist.train_loss), train_seconds=seconds,
                      device=str(backbone.device), created_at=finished, n_train=len(train),
                      lora_targets=targets, plot_file=plot, outputs_word=task.outputs_word,
                      loss_words=task.loss_words, label_note=train.label_note)
    card = render_card(facts)
    history = {"metrics": {s: m.to_dict() for s, m in metrics.items()}, "history": hist.to_dict(),
               "training": info}
    curves = {**hist.to_dict(), "loss_name": task.loss_name, "headline_name": task.headline_name}
    if head is None:  # a scratch baseline: the report folder only
        write_report_dir(out, card)
        write_metrics(out, history)
        plot_loss_curves(curves, out / "loss_curves.png", f"{cfg.name} ({cfg.method})")
        return None
    flat = {}
    for split, m in metrics.items():
        flat.update(m.summary("val" if split == "validation" else split))
    manifest = Manifest(name=cfg.name, kind=cfg.method, task_type=task.name, labels=list(train.label_names),
                        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint,
                                             source=backbone.spec.source),
                        head=HeadSpec.model_validate(head.spec.model_dump()),
                        preprocessing=backbone.preprocessing_settings(), metrics=flat, training=info,
                        created_at=finished)
    head = head.cpu()
    if peft_model is not None:
        write_lora_dir(out, manifest, head, peft_model, card)
    else:
        write_head_dir(out, manifest, head, card)
    write_metrics(out, history)
    plot_loss_curves(curves, out / "loss_curves.png", f"{cfg.name} ({cfg.method})")
    return manifest
