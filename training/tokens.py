"""Training for task types with per-token heads (``token_classification``): head and LoRA.

The same phases as :mod:`training.trainer` (check → split → fit → evaluate → export) over
sentences of words instead of single examples:

- **fit**: the method's :meth:`~training.methods.TrainingMethod.fit_tokens`: a head on the
  frozen first-sub-token features of every word, or LoRA + head (both in
  :mod:`training.token_fit`, which also aligns words to sub-tokens);
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

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.plugin_checks import validate_manifest
from training.card import CardFacts, render_card
from training.config import TrainConfig
from training.data.tokens import TokenData
from training.export import prepare_output_dir, write_metrics
from training.fitted import TokenFit
from training.head_fit import History
from training.methods import token_methods, training_method
from training.plots import plot_loss_curves
from training.tasks import training_task
from training.token_fit import kept_data

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


# ---- the run --------------------------------------------------------------------------
def train_tokens(data: TokenData, backbone: Backbone | BackboneSpec, cfg: TrainConfig, out_dir,
                 val: TokenData | None = None, test: TokenData | None = None) -> TokenTrainResult:
    """Train ``cfg.method`` (head | lora | scratch) on tagged sentences and write the folder."""
    task = training_task(cfg.task_type)
    method = training_method(cfg.method)
    problems = task.check_data(data)
    if not method.fits_tokens:
        usable = token_methods()
        problems.append(f"method {cfg.method!r} is not available for {task.name}; use "
                        f"{', '.join(usable[:-1])} or {usable[-1]} (a baseline)")
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
    fit = method.fit_tokens(backbone, fit_data, val_data, cfg)
    seconds = time.perf_counter() - start
    splits = {"train": fit_data, "validation": val_data} | ({"test": test} if test is not None else {})
    metrics, outputs, cut = {}, {}, 0
    for split, d in splits.items():
        probs, kept = fit.predict(d)
        scored = kept_data(d, kept)
        cut += sum(len(s) for s in d.sentences) - sum(len(k) for k in kept)
        metrics[split] = task.metrics(scored, probs, task.eval_loss(probs, scored))
        outputs[split] = (scored, probs)
    manifest = _export(out, cfg, backbone, splits, fit, metrics, outputs, seconds, cut, carved=val is None)
    log.info("trained %s (%s tagger) in %.1fs: val entity F1 %.4f, token accuracy %.4f", cfg.name,
             cfg.method, seconds, metrics["validation"].f1, metrics["validation"].accuracy)
    return TokenTrainResult(out, cfg, manifest, metrics, fit.history, seconds, cut)


def _export(out, cfg, backbone, splits, fit: TokenFit, metrics, outputs, seconds, cut: int,
            carved: bool) -> Manifest | None:
    task = training_task(cfg.task_type)
    method = training_method(cfg.method)
    train = splits["train"]
    hist = fit.history
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    hyper = {**cfg.hyperparameters(), "pooling": "tokens"}
    if fit.lora_targets:
        hyper["lora_targets"] = fit.lora_targets
    info = {"method": cfg.method, "hyperparameters": hyper, "data": train.source,
            "examples": {s: len(d) for s, d in splits.items()}, "tag_counts": train.tag_counts(),
            "best_epoch": hist.best_epoch, "kept_by": hist.kept_by, "epochs_run": len(hist.train_loss),
            "stopped_early": hist.stopped_early, "seconds": round(seconds, 2), "finished_at": finished,
            "torch": torch.__version__, "words_past_max_length": cut}
    if fit.trained_parameters is not None:
        info["trained_parameters"] = fit.trained_parameters
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
    facts = CardFacts(name=cfg.name, **method.card_words(backbone.name, tokens=True), task_type=task.name,
                      labels=list(train.label_names),
                      backbone_name=backbone.name, backbone_source=backbone.spec.source,
                      fingerprint=backbone.fingerprint, preprocessing=backbone.preprocessing_settings(),
                      data=lines, hyper=hyper, metrics=metrics, report_split=report,
                      best_epoch=hist.best_epoch, epochs_run=len(hist.train_loss), kept_by=hist.kept_by,
                      train_seconds=seconds,
                      device=str(backbone.device), created_at=finished, n_train=len(train),
                      lora_targets=fit.lora_targets, plot_file=plot, outputs_word=task.outputs_word,
                      loss_words=task.loss_words, label_note=train.label_note)
    card = render_card(facts)
    manifest = None
    if method.servable:
        manifest = Manifest(name=cfg.name, kind=method.kind, task_type=task.name,
                            **task.manifest_fields(list(train.label_names), None),
                            backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint,
                                                 source=backbone.spec.source),
                            head=HeadSpec.model_validate(fit.head.spec.model_dump()),
                            preprocessing=backbone.preprocessing_settings(),
                            metrics=task.manifest_metrics(metrics), training=info, created_at=finished)
        manifest = validate_manifest(manifest)  # what its kind and task type require, as the server will check
        fit.head = fit.head.cpu()
    method.write(out, manifest, card, fit)
    write_metrics(out, {"metrics": {s: m.to_dict() for s, m in metrics.items()}, "history": hist.to_dict(),
                        "training": info})
    curves = {**hist.to_dict(), "loss_name": task.loss_name, "headline_name": task.headline_name}
    plot_loss_curves(curves, out / "loss_curves.png", f"{cfg.name} ({cfg.method})")
    return manifest
