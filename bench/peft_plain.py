"""The plain PEFT reference: what a short, trick-free LoRA script reaches on the same data.

``AutoModelForSequenceClassification`` on the backbone's own folder (for MiniLM-L6 the
classifier reads BERT's pooler output: the [CLS] state through the pretrained dense + tanh,
then dropout), ``peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
target_modules=["query", "value"])`` (the values of PEFT's own sequence-classification
example), AdamW at a constant lr 2e-3, batch 32, 2 epochs, the model in train mode
(BERT's dropout on), no warm start, no schedule, no early stopping, no validation split:
the last state is scored. Only the wall-clock cap is added, checked after every step like
the project's trainer (``TrainConfig.max_train_minutes``), so both can run under one budget.

Switches that move it, one at a time, toward the project's LoRA recipe (none on by default),
to find which difference makes the two score apart: ``targets="all"`` (every block
``Linear``, the project's default), ``pooling="mean"`` (a fresh ``Linear`` classifier,
std 0.02 as BERT initialises its own, after dropout 0.1 on the token mean instead of the
pooler), ``train_fraction`` (train on a stratified share, as the project keeps 20% for
validation), ``schedule="linear"`` (warm-up over 10% of the steps, then linear decay to 0).

It is a reference for ``bench/top_layers_compare.py`` ("never worse than a plain PEFT
script at the same time budget"), not a project method: its adapter is not exported.

    python -m bench peft-plain --per-class 200 --seed 0 --cap-min 3 --threads 1
    python -m bench peft-plain --smoke   # a tiny random backbone and 8 examples
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.backbones.base import resolve_source
from bench.common import SMOKE_HELP, TEXT_SPEC, smoke_specs
from bench.splits import labelled_and_test
from training.data import LabelledData


@dataclass
class PlainResult:
    test_accuracy: float
    train_seconds: float
    epochs_run: float  # fractional when the cap cut an epoch
    steps: int
    time_capped: bool


def plain_peft(source_path: str, train: LabelledData, test: LabelledData, seed: int = 0,
               epochs: int = 2, lr: float = 2e-3, batch_size: int = 32, r: int = 8,
               max_length: int = 128, max_minutes: float | None = None,
               eval_batch_size: int = 64, targets: str = "query_value", pooling: str = "pooler",
               train_fraction: float = 1.0, schedule: str = "constant") -> PlainResult:
    """Train the plain PEFT LoRA classifier on ``train`` (all of it) and score ``test``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    if train_fraction < 1.0:
        from training.data import stratified_sample
        train = stratified_sample(train, round(train_fraction * len(train)), seed)
    tok = AutoTokenizer.from_pretrained(source_path)
    model = AutoModelForSequenceClassification.from_pretrained(source_path, num_labels=len(train.label_names))
    if targets == "all":
        from training.lora import block_linear_targets
        target_modules = block_linear_targets(model.bert)
    else:
        target_modules = ["query", "value"]
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=target_modules))
    if pooling == "mean":
        model = _MeanPooled(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = None
    if schedule == "linear":  # the project's own warm-up + decay (its plan, without a wall clock)
        from training.finetune import _Schedule
        plan = _Schedule(epochs * ((len(train) + batch_size - 1) // batch_size), 0.1, deadline=None)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, plan.factor)
    labels = torch.tensor(train.labels)
    gen = torch.Generator().manual_seed(seed)
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    start, steps, rows, capped = time.perf_counter(), 0, 0, False
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            batch = tok([train.inputs[j] for j in idx], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
            loss = model(**batch, labels=labels[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            steps, rows = steps + 1, rows + len(idx)
            if deadline is not None and time.monotonic() > deadline:
                capped = True
                break
        if capped:
            break
    seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test), eval_batch_size):
            batch = tok(test.inputs[i:i + eval_batch_size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
            pred = model(**batch).logits.argmax(-1)
            correct += int((pred == torch.tensor(test.labels[i:i + eval_batch_size])).sum())
    return PlainResult(correct / len(test), seconds, rows / len(train), steps, capped)


class _MeanPooled(torch.nn.Module):
    """The PEFT model's encoder, mean-pooled over real tokens, into the classifier (a fresh
    ``Linear`` at BERT's std 0.02 after dropout 0.1); called like the original."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model
        base = peft_model.base_model.model
        self.encoder = base.bert
        self.dropout = torch.nn.Dropout(0.1)
        self.classifier = torch.nn.Linear(base.config.hidden_size, base.config.num_labels)
        torch.nn.init.normal_(self.classifier.weight, std=0.02)
        torch.nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids, attention_mask, labels=None, **kw):
        from types import SimpleNamespace
        from adapters.backbones.base import Features  # the project's own pooling
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw)
        logits = self.classifier(self.dropout(Features(out, attention_mask).get("mean")))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(logits=logits, loss=loss)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cap-min", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 4 per class, 20 test examples")
    args = ap.parse_args(argv)
    if args.smoke:
        args.per_class, args.test = 4, 20
    torch.set_num_threads(args.threads)
    labelled, test = labelled_and_test(args.per_class, args.seed, args.test)
    with tempfile.TemporaryDirectory() as tmp:
        spec = smoke_specs(Path(tmp))[0] if args.smoke else TEXT_SPEC
        r = plain_peft(resolve_source(spec.source), labelled, test, seed=args.seed, max_minutes=args.cap_min,
                       max_length=spec.max_length)
    print(r)

