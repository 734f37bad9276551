"""Multitask training: one LoRA trained jointly with one head per task.

Every step draws one minibatch from each task (a task with fewer rows cycles through its
own), runs it through the shared LoRA-adapted trunk and its own head, and takes one AdamW
step on the weighted mean of the tasks' losses (each task type's own loss). After every
epoch each task is scored on its validation split; the state with the best weighted mean
of the tasks' validation headlines is kept (epoch 0, the frozen trunk with fresh heads,
included). The run writes, under ``out``:

- ``out/<shared name>/``: the shared adaptation (kind ``shared_lora``, task type
  ``trunk_adaptation``): PEFT's own ``save_pretrained`` files, ``adapter.json`` with every
  task's metrics, the run's one model card ``README.md`` and ``metrics.json``;
- ``out/<task>/``: one folder per task (kind ``multitask``): ``adapter.json`` naming the
  shared adaptation (``shared: {name}``: its active version at registration, stored as the
  exact id), ``head.safetensors`` and the same card.

Register the shared adaptation first, then the tasks (``taskswap register``, or
``Registry.register``). Only pooled single-label, multi-label and regression tasks train
here (their heads read pooled features); the task types come from each data set.

    >>> MultitaskConfig(name="base", weights=[1.0, 0.5]).weights
    [1.0, 0.5]
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from pydantic import BaseModel, Field

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.format.adapter_dir import write_manifest
from adapters.format.manifest import NAME_PATTERN, SharedRef
from adapters.plugin_checks import validate_manifest
from training.data import LabelledData
from training.export import prepare_output_dir, write_head_dir, write_metrics
from training.finetune import encode, fresh_head, predict_probs
from training.lora import block_linear_targets, default_targets, resolve_targets, trainable_copy
from training.multitask_card import render_multitask_card
from training.tasks import training_task


class MultitaskConfig(BaseModel):
    """Settings of one multitask run."""

    name: str = Field(pattern=NAME_PATTERN, description="The shared adaptation's name.")
    weights: list[float] | None = Field(None, description=(
        "Per-task loss weights, in the order of the tasks (None: 1 each); each >= 0, one > 0."))
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(5e-4, ge=0.0, le=1.0, description="LoRA factors' learning rate.")
    head_lr: float = Field(2e-3, ge=0.0, le=1.0, description="The heads' learning rate.")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    lora_r: int = Field(8, ge=1, le=512)
    lora_alpha: float = Field(16.0, ge=0.0)
    lora_dropout: float = Field(0.05, ge=0.0, le=1.0)
    lora_targets: list[str] | None = Field(None, description="None: every Linear in the blocks.")
    clip_norm: float | None = Field(1.0, ge=0.0)
    seed: int = 0
    feature_batch_size: int = Field(64, ge=1)
    max_train_minutes: float | None = Field(None, ge=0.0, description="Stop after this long (mid-epoch).")


@dataclass
class MultitaskData:
    """One task of a run: its name, training and validation data."""

    name: str
    train: LabelledData
    val: LabelledData

    @property
    def task_type(self) -> str:
        return self.train.task_type


@dataclass
class MultitaskResult:
    shared_dir: Path
    task_dirs: dict[str, Path]
    metrics: dict[str, dict]  # task -> its validation summary (val_accuracy, ...)
    history: list[dict] = field(default_factory=list)  # per epoch: per-task val headline, mean
    best_epoch: int = 0
    seconds: float = 0.0


def check_tasks(tasks: list[MultitaskData], cfg: MultitaskConfig) -> list[float]:
    """The loss weights, after checking the tasks; an ``InvalidInput`` naming every problem."""
    problems = []
    if len(tasks) < 2:
        problems.append(f"a multitask run needs at least 2 tasks, got {len(tasks)}")
    names = [t.name for t in tasks]
    problems += [f"task name {n!r} appears twice" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += [f"task name {n!r} is the shared adaptation's name too" for n in names if n == cfg.name]
    for t in tasks:
        problems += [f"{t.name}: {p}" for p in training_task(t.task_type).check_data(t.train)]
    weights = cfg.weights if cfg.weights is not None else [1.0] * len(tasks)
    if len(weights) != len(tasks):
        problems.append(f"{len(weights)} loss weights for {len(tasks)} tasks; give one per task")
    elif any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        problems.append(f"loss weights {weights} must be >= 0 with at least one > 0")
    if problems:
        raise InvalidInput("; ".join(problems))
    return list(weights)


def _peft_model(backbone: Backbone, cfg: MultitaskConfig):
    torch.manual_seed(cfg.seed)  # LoRA's A initialisation
    model = trainable_copy(backbone)
    targets = list(cfg.lora_targets or block_linear_targets(model) or default_targets(model))
    resolve_targets(model, targets)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none")
    return get_peft_model(model, lcfg), targets


def _scores(model, heads, backbone, tasks, pooling, cfg) -> tuple[list[float], list[torch.Tensor]]:
    """Per task: validation headline and outputs (no gradients, eval mode)."""
    heads_out, outs = [], []
    for t, head in zip(tasks, heads):
        tt = training_task(t.task_type)
        raw = predict_probs(model, head, backbone, t.val.inputs, pooling, cfg.feature_batch_size,
                            _Raw(), None)  # [n, outputs] raw head outputs
        scaling = getattr(head, "scaling", None)
        heads_out.append(float(tt.headline(raw, tt.targets(t.val, scaling))))
        outs.append(tt.outputs(raw, scaling))
    return heads_out, outs


class _Raw:
    """The raw head outputs (the task types turn them into served outputs afterwards)."""

    @staticmethod
    def outputs(logits, scaling=None):
        return logits


def train_multitask(backbone: Backbone, tasks: list[MultitaskData], out: Path,
                    cfg: MultitaskConfig) -> MultitaskResult:
    """Train one LoRA jointly with a head per task; write the shared adaptation and the task
    folders under ``out`` (see the module docstring). Returns where and how well."""
    weights = check_tasks(tasks, cfg)
    start = time.monotonic()
    pooling = backbone.default_pooling
    spec = HeadSpec(pooling=pooling, input_dim=backbone.hidden_size)
    model, targets = _peft_model(backbone, cfg)
    torch.manual_seed(cfg.seed)
    heads = []
    for t in tasks:
        head = fresh_head(backbone, spec, len(_names(t)), t.train, cfg.feature_batch_size, init="normal")
        head.scaling = training_task(t.task_type).target_scaling(t.train)  # regression: scaled targets
        heads.append(head.requires_grad_(True))
    lora_params = [p for p in model.parameters() if p.requires_grad]
    head_params = [p for h in heads for p in h.parameters()]
    opt = torch.optim.AdamW([{"params": lora_params, "lr": cfg.lr},
                             {"params": head_params, "lr": cfg.head_lr}], weight_decay=cfg.weight_decay)
    targets_y = [training_task(t.task_type).targets(t.train, h.scaling) for t, h in zip(tasks, heads)]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def set_train(flag: bool) -> None:
        model.eval()  # the base stays in eval (BatchNorm); dropout follows the flag
        for m in [*model.modules(), *(m for h in heads for m in h.modules())]:
            if isinstance(m, torch.nn.Dropout):
                m.train(flag)

    def state() -> dict:
        return {"lora": {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable},
                "heads": [copy.deepcopy(h.state_dict()) for h in heads]}

    def mean(values: list[float]) -> float:
        return sum(w * v for w, v in zip(weights, values)) / sum(weights)

    set_train(False)
    val0, _ = _scores(model, heads, backbone, tasks, pooling, cfg)
    history = [{"epoch": 0, "val_headlines": dict(zip((t.name for t in tasks), val0)), "mean": mean(val0)}]
    best, best_epoch, best_state = mean(val0), 0, state()
    gen = torch.Generator().manual_seed(cfg.seed)
    deadline = start + 60 * cfg.max_train_minutes if cfg.max_train_minutes else None
    steps = max((len(t.train) + cfg.batch_size - 1) // cfg.batch_size for t in tasks)
    for epoch in range(1, cfg.epochs + 1):
        set_train(True)
        orders = [torch.randperm(len(t.train), generator=gen).tolist() for t in tasks]
        total = 0.0
        for step in range(steps):
            loss = 0.0
            for k, (t, head) in enumerate(zip(tasks, heads)):
                if weights[k] == 0:
                    continue
                n = len(orders[k])
                idx = [orders[k][(step * cfg.batch_size + j) % n] for j in range(min(cfg.batch_size, n))]
                feats = encode(model, backbone, [t.train.inputs[i] for i in idx], pooling)
                y = targets_y[k][idx].to(feats.device)
                loss = loss + weights[k] * training_task(t.task_type).loss(head(feats), y)
            loss = loss / sum(weights)
            opt.zero_grad()
            loss.backward()
            if cfg.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(lora_params + head_params, cfg.clip_norm)
            opt.step()
            total += float(loss.detach())
            if deadline is not None and time.monotonic() > deadline:
                break
        set_train(False)
        val, _ = _scores(model, heads, backbone, tasks, pooling, cfg)
        history.append({"epoch": epoch, "train_loss": total / (step + 1),
                        "val_headlines": dict(zip((t.name for t in tasks), val)), "mean": mean(val)})
        if mean(val) > best + 1e-9:
            best, best_epoch, best_state = mean(val), epoch, state()
        if deadline is not None and time.monotonic() > deadline:
            break
    model.load_state_dict(best_state["lora"], strict=False)
    for h, s in zip(heads, best_state["heads"]):
        h.load_state_dict(s)
    set_train(False)
    _, outs = _scores(model, heads, backbone, tasks, pooling, cfg)
    metrics = {t.name: training_task(t.task_type).metrics(t.val, o).summary("val") for t, o in zip(tasks, outs)}
    final = [h.folded() for h in heads]  # plain heads on raw features, as the server reads them
    seconds = time.monotonic() - start
    result = MultitaskResult(Path(out) / cfg.name, {}, metrics, history, best_epoch, seconds)
    _write(backbone, tasks, weights, model, final, heads, targets, cfg, result)
    return result


def _names(t: MultitaskData) -> list[str]:
    return list(t.train.label_names)  # labels, or a regression's outputs


def _write(backbone, tasks, weights, model, final, heads, targets, cfg, result) -> None:
    ref = BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint, source=backbone.spec.source)
    created = datetime.now(timezone.utc).isoformat()
    hyper = {**cfg.model_dump(exclude={"name", "weights"}), "lora_targets": targets,
             "weights": dict(zip((t.name for t in tasks), weights))}
    training = {"method": "multitask", "tasks": [t.name for t in tasks], **hyper,
                "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 1)}
    card = render_multitask_card(cfg.name, backbone, tasks, weights, result, hyper)
    flat = {f"{task}/{k}": v for task, m in result.metrics.items() for k, v in m.items()}
    shared = validate_manifest(Manifest(
        name=cfg.name, kind="shared_lora", task_type="trunk_adaptation", backbone=ref,
        preprocessing=backbone.preprocessing_settings(), training=training, created_at=created,
        metrics={**flat, **training_task("trunk_adaptation").headline_record("val"),
                 "val_task_mean": result.history[result.best_epoch]["mean"]}))
    sdir = prepare_output_dir(result.shared_dir)
    model.save_pretrained(str(sdir), safe_serialization=True)
    write_manifest(sdir, shared)
    (sdir / "README.md").write_text(card)
    write_metrics(sdir, {"tasks": result.metrics, "history": result.history})
    for t, head, trained in zip(tasks, final, heads):
        tt = training_task(t.task_type)
        m = validate_manifest(Manifest(
            name=t.name, kind="multitask", task_type=t.task_type, backbone=ref,
            shared=SharedRef(name=cfg.name), head=head.spec,
            preprocessing=backbone.preprocessing_settings(), training=training, created_at=created,
            metrics={**result.metrics[t.name], **tt.headline_record("val")},
            **tt.manifest_fields(_names(t), getattr(trained, "scaling", None))))
        tdir = prepare_output_dir(Path(result.shared_dir).parent / t.name)
        write_head_dir(tdir, m, head, card)
        write_metrics(tdir, {"validation": result.metrics[t.name]})
        result.task_dirs[t.name] = tdir
