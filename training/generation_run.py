"""One generation training run in named phases: check → split → fit → evaluate → export.

The Python API behind ``taskswap train --task-type generation``, the HTTP fit job and the
translation demo::

    >>> from adapters.backbones.tiny import tiny_lm_spec
    >>> from adapters.format.manifest import GenerationSpec
    >>> from training.config import TrainConfig
    >>> from training.generation.data import GenerationData, GenerationExample
    >>> d = GenerationData([GenerationExample("abc", "cba"), GenerationExample("xy", "yx")] * 4, "toy")
    >>> r = train_generation(d, tiny_lm_spec("/tmp/tiny-lm-gen-doc"), TrainConfig(
    ...     name="rev", method="lora", task_type="generation", epochs=1, progress=False),
    ...     GenerationSpec(prompt_template="Reverse: {input}\\n", stop=["\\n"], max_new_tokens=8),
    ...     "/tmp/rev-adapter")
    >>> r.manifest.kind, r.manifest.task_type, sorted(r.metrics)
    ('lora', 'generation', ['validation'])
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from adapters.backbones.base import BackboneSpec
from adapters.backbones.causal_lm import GENERATION_MODALITY, LMBackbone, load_lm_backbone
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, Manifest
from adapters.format.manifest import GenerationSpec
from adapters.plugin_checks import validate_manifest
from training.config import TrainConfig
from training.export import prepare_output_dir, write_metrics
from training.generation.card import GenerationCardFacts, render_generation_card
from training.generation.data import GenerationData
from training.generation.decode import greedy_texts
from training.generation.export import write_generation_dir
from training.generation.fit import GenerationFit
from training.generation.metrics import generation_scores
from training.generation.plot import plot_generation_curves
from training.methods import generation_methods, training_method
from training.tasks import training_task

log = logging.getLogger("taskswap.training")
N_CARD_EXAMPLES = 5
GENERATION_SETTINGS = ("method", "task_type", "epochs", "lr", "batch_size", "weight_decay", "select",
                       "val_fraction", "seed", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
                       "warmup_fraction", "schedule", "clip_norm")
"""The settings that shape a generation run (the pooled heads' settings do not apply)."""


@dataclass
class GenerationResult:
    path: Path
    config: TrainConfig
    manifest: Manifest
    metrics: dict[str, dict]
    """split -> ``{"n", "chrf", "bleu", "exact_match", "token_f1"}``."""
    history: dict
    seconds: float
    outputs: dict[str, list[str]]
    """split -> the greedy outputs scored (validation: a seeded sample of ``eval_limit`` examples)."""
    scored: dict[str, GenerationData]
    """split -> the examples those outputs answer (what a comparison must score too)."""


# ---- phase 1: check -------------------------------------------------------------------
def check_generation(data: GenerationData, val: GenerationData | None, cfg: TrainConfig,
                     spec: GenerationSpec, backbone: LMBackbone | None) -> None:
    """Raise one ``InvalidInput`` listing every problem with the data, method and prompt."""
    problems = []
    if cfg.method not in generation_methods():
        problems.append(f"method {cfg.method!r} does not make generation tasks; use one of {generation_methods()}")
    if cfg.task_type != training_task("generation").name:
        problems.append(f"task_type is {cfg.task_type!r}; this trainer makes 'generation' tasks")
    if len(data) == 0:
        problems.append("the training data holds no examples")
    if val is None and len(data) < 2:
        problems.append(f"only {len(data)} examples: too few to carve off a validation split")
    if val is not None and len(val) == 0:
        problems.append("the validation data holds no examples")
    if backbone is not None:
        if backbone.modality != GENERATION_MODALITY:
            problems.append(f"backbone {backbone.name!r} is a {backbone.modality} encoder; generation tasks "
                            "train on a language model (--backbone lm or a causal-LM folder)")
        elif getattr(backbone.tokenizer, "chat_template", None) is None and (
                spec.prompt_format == "chat" or any(e.messages is not None for e in data.examples)):
            problems.append("the language model's tokenizer has no chat template: use prompt/completion "
                            "examples with --prompt-format raw")
    InvalidInput.collect(problems, "generation training")


# ---- phase 4: evaluate ----------------------------------------------------------------
def score_examples(model, backbone: LMBackbone, data: GenerationData, spec: GenerationSpec,
                   batch_size: int = 16) -> tuple[dict, list[str]]:
    """Greedy outputs of ``model`` (a PEFT model, or the frozen base) on ``data``, and their scores."""
    refs = [e.completion for e in data.examples]
    longest = max(len(backbone.tokenizer(r)["input_ids"]) for r in refs)
    hyps = greedy_texts(model, backbone.tokenizer, data.examples, spec, backbone.eos_token_ids,
                        min(spec.max_new_tokens, longest * 2 + 8), batch_size=batch_size)
    return {"n": len(refs), **generation_scores(hyps, refs)}, hyps


# ---- phase 5: export ------------------------------------------------------------------
def _data_lines(splits: dict[str, GenerationData], carved: bool, cfg: TrainConfig) -> list[str]:
    lines = [f"source: {splits['train'].source}"]
    lines += [f"{s}: {len(d)} examples" for s, d in splits.items()]
    if carved:
        lines.append(f"validation carved off the training data ({cfg.val_fraction:.0%}, seed {cfg.seed})")
    for key, value in splits["train"].notes.items():
        lines.append(f"{key}: {value}")
    return lines


def export_generation(out: Path, cfg: TrainConfig, backbone: LMBackbone, spec: GenerationSpec,
                      splits: dict[str, GenerationData], fitted: GenerationFit, metrics: dict[str, dict],
                      outputs: dict[str, list[str]], scored: dict[str, GenerationData], seconds: float,
                      carved: bool) -> Manifest:
    method = training_method(cfg.method)
    task = training_task("generation")
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    hyper = {k: v for k, v in cfg.hyperparameters().items() if k in GENERATION_SETTINGS}
    if fitted.targets:
        hyper["lora_targets"] = fitted.targets
    info = {"method": cfg.method, "hyperparameters": hyper, "data": splits["train"].source,
            "examples": {s: len(d) for s, d in splits.items()}, "best_epoch": fitted.history.best_epoch,
            "epochs_run": len(fitted.history.train_loss), "steps": fitted.history.steps,
            "time_capped": fitted.history.time_capped, "seconds": round(seconds, 2),
            "finished_at": finished, "torch": torch.__version__, "data_notes": splits["train"].notes}
    manifest = validate_manifest(Manifest(
        name=cfg.name, kind=method.kind, task_type=task.name, generation=spec,
        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint, source=backbone.spec.source),
        preprocessing=backbone.preprocessing_settings(), metrics=task.manifest_metrics(metrics),
        training=info, created_at=finished))
    report = "test" if "test" in metrics else "validation"
    shown = scored[report].examples[:N_CARD_EXAMPLES]
    history = fitted.history.to_dict()
    facts = GenerationCardFacts(
        name=cfg.name, summary_line=method.summary_line(backbone.name),
        recipe=method.generation_recipe.format(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                               targets=", ".join(fitted.targets)),
        backbone_name=backbone.name, backbone_source=backbone.spec.source, fingerprint=backbone.fingerprint,
        data=_data_lines(splits, carved, cfg), generation=spec.model_dump(exclude_none=True), hyper=hyper,
        metrics=metrics, examples=[(e.input_text, e.completion, o) for e, o in zip(shown, outputs[report])],
        history=history, seconds=seconds, created_at=finished,
        plot_file=plot_generation_curves(history, out, f"{cfg.name} ({cfg.method})"))
    write_generation_dir(out, manifest, render_generation_card(facts), fitted.peft_model)
    write_metrics(out, {"metrics": metrics, "history": history, "training": info,
                        "outputs": {s: o[:50] for s, o in outputs.items()}})
    return manifest


# ---- the run --------------------------------------------------------------------------
def train_generation(data: GenerationData, backbone: LMBackbone | BackboneSpec, config: TrainConfig,
                     spec: GenerationSpec, out_dir, val: GenerationData | None = None,
                     test: GenerationData | None = None, eval_limit: int = 64) -> GenerationResult:
    """Train ``config.method`` (``lora`` or ``prompt``) for the generation task ``spec`` describes
    and write its folder ``out_dir``; ``val`` (else ``config.val_fraction`` of ``data``) selects
    the epoch (its first ``eval_limit`` examples are decoded per epoch), ``test`` is scored after."""
    check_generation(data, val, config, spec, None)
    if isinstance(backbone, BackboneSpec):
        backbone = load_lm_backbone(backbone)
    check_generation(data, val, config, spec, backbone)
    out = prepare_output_dir(Path(out_dir))
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    carved = val is None
    if carved:
        data, val = data.split(config.val_fraction, config.seed)
    splits = {"train": data, "validation": val}
    fitted = training_method(config.method).fit_generation(backbone, data, val, spec, config, eval_limit)
    seconds = time.perf_counter() - start
    model = fitted.peft_model if fitted.peft_model is not None else backbone.model
    metrics, outputs = {}, {}
    scored = {"validation": val.sample(eval_limit, config.seed)}
    if test is not None:
        scored["test"] = splits["test"] = test
    for split, d in scored.items():
        metrics[split], outputs[split] = score_examples(model, backbone, d, spec)
    manifest = export_generation(out, config, backbone, spec, splits, fitted, metrics, outputs, scored,
                                 seconds, carved)
    log.info("trained %s (%s) in %.1fs: val chrF %.2f", config.name, config.method, seconds,
             metrics["validation"]["chrf"])
    return GenerationResult(out, config, manifest, metrics, fitted.history.to_dict(), seconds, outputs, scored)


def write_prompt_task(name: str, backbone: LMBackbone | BackboneSpec, spec: GenerationSpec, out_dir) -> Path:
    """A prompt-only generation task from its settings alone (no data, no scores): ``adapter.json``
    (kind ``prompt``) and a card, ready to register."""
    if isinstance(backbone, BackboneSpec):
        backbone = load_lm_backbone(backbone)
    method = training_method("prompt")
    out = prepare_output_dir(Path(out_dir))
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = validate_manifest(Manifest(
        name=name, kind=method.kind, task_type=training_task("generation").name, generation=spec,
        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint, source=backbone.spec.source),
        preprocessing=backbone.preprocessing_settings(), training={"method": method.name},
        created_at=finished))
    facts = GenerationCardFacts(
        name=name, summary_line=method.summary_line(backbone.name), recipe=method.generation_recipe,
        backbone_name=backbone.name, backbone_source=backbone.spec.source, fingerprint=backbone.fingerprint,
        data=["none: the task is its prompt settings alone (not scored)"],
        generation=spec.model_dump(exclude_none=True), hyper={"method": method.name}, metrics={}, examples=[],
        history={}, seconds=0.0, created_at=finished,
        limitations=["Not scored: run `taskswap evaluate` on examples to measure it."])
    return write_generation_dir(out, manifest, render_generation_card(facts))
