"""Training's two seams: a training method and the training half of a task type are objects
in one table each; the settings, the trainers and the card ask them and name neither."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.kinds import KINDS
from adapters.tasks import TASK_TYPES
from training.card import CardFacts, render_card
from training.config import TrainConfig
from training.method_settings import METHOD_SETTINGS
from training.methods import METHODS, token_methods, training_method
from training.metrics import classification_metrics
from training.tasks import TRAINING_TASKS, training_task

ROOT = Path(__file__).resolve().parents[2]

# The tables these objects replaced (training/config.py before the methods had their own
# files): every (task type, method) must still get exactly these defaults.
OLD_METHOD_DEFAULTS = {
    "head": {"epochs": 200, "lr": 1e-3, "batch_size": 64, "patience": 10, "weight_decay": 1e-4, "select": "loss"},
    "lora": {"epochs": 6, "lr": 2e-3, "batch_size": 32, "patience": 6, "weight_decay": 0.0, "head_lr": 2e-3,
             "select": "headline", "head_init": "standardised", "head_dropout": 0.0},
    "top_layers": {"epochs": 6, "lr": 5e-4, "batch_size": 32, "patience": 6, "weight_decay": 0.01,
                   "head_lr": 2e-3, "select": "headline", "head_init": "standardised", "head_dropout": 0.0},
    "scratch": {"epochs": 10, "lr": 1e-3, "batch_size": 32, "patience": 10, "weight_decay": 1e-2, "select": "loss"},
}
OLD_TASK_METHOD_DEFAULTS = {
    ("token_classification", "lora"): {"epochs": 5, "lr": 5e-4, "patience": 2, "select": "loss"},
    ("single_label", "lora"): {"head_init": "normal", "head_dropout": 0.1},
    # Added with the generation task type (a causal-LM LoRA, training/generation/fit.py).
    ("generation", "lora"): {"epochs": 3, "lr": 1e-3, "batch_size": 8, "select": "headline"},
}
OLD_EXTRA_KEYS = {
    "head": [], "scratch": [],
    "lora": ["lora_r", "lora_alpha", "lora_dropout", "lora_targets", "head_lr", "warmup_fraction", "schedule",
             "clip_norm", "head_dropout", "head_init", "warm_start"],
    "top_layers": ["layers", "layer_decay", "head_lr", "warmup_fraction", "schedule", "clip_norm",
                   "head_dropout", "head_init", "warm_start"],
}


@pytest.mark.parametrize("method", sorted(OLD_METHOD_DEFAULTS))
@pytest.mark.parametrize("task_type", sorted(TRAINING_TASKS))
def test_defaults_per_task_type_and_method_are_unchanged(method, task_type):
    want = {**OLD_METHOD_DEFAULTS[method], **OLD_TASK_METHOD_DEFAULTS.get((task_type, method), {})}
    cfg = TrainConfig(name="t", method=method, task_type=task_type)
    assert {k: getattr(cfg, k) for k in want} == want
    assert training_method(method).defaults_for(task_type) == want
    keys = list(cfg.hyperparameters())
    assert keys[14:] == OLD_EXTRA_KEYS[method] and keys[:2] == ["method", "task_type"]


def test_the_tables_agree_with_the_serving_tables():
    assert list(METHODS) == ["head", "lora", "top_layers", "scratch", "prompt"]
    assert list(METHOD_SETTINGS) == list(METHODS)
    assert all(m.settings is METHOD_SETTINGS[name] for name, m in METHODS.items())
    # shared_lora + multitask are written by the multitask run (training/multitask.py), not a method
    assert {m.kind for m in METHODS.values() if m.servable} == set(KINDS) - {"shared_lora", "multitask"}
    assert not training_method("scratch").servable
    assert set(TRAINING_TASKS) == set(TASK_TYPES)
    assert token_methods() == ["head", "lora", "scratch"]
    assert {t: training_task(t).headline_record()["headline"]["metric"] for t in TRAINING_TASKS} == {
        "single_label": "val_accuracy", "multi_label": "val_accuracy", "regression": "val_r2",
        "token_classification": "val_token_accuracy", "detection": "val_map", "segmentation": "val_miou",
        "generation": "val_chrf", "trunk_adaptation": "val_task_mean"}
    with pytest.raises(ValueError, match="method 'distil' is unknown"):
        TrainConfig(name="t", method="distil")


def test_no_method_or_task_type_branches_in_training():
    pattern = re.compile(r"""(method|kind)\s*(==|!=)|\.method\s+(not\s+)?in\s*\(|task_type\s*(==|!=)\s*["']""")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in sorted((ROOT / "training").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_serving_task_types_hold_no_training_members():
    training_only = {"loss", "headline", "targets", "target_scaling", "eval_loss", "metrics", "plot",
                     "manifest_fields", "check_data", "loss_words", "loss_name", "headline_name", "outputs_word"}
    for t in TASK_TYPES.values():
        assert not training_only & set(dir(t)), t.name


@pytest.mark.parametrize("method, words", [("head", "head adapter"), ("lora", "LoRA adapter"),
                                           ("top_layers", "top-layers adapter"),
                                           ("scratch", "from-scratch baseline report")])
def test_the_card_names_the_kind_the_method_wrote(method, words):
    m = classification_metrics([0, 1], [0, 1], ["a", "b"])
    facts = CardFacts(name="t", **training_method(method).card_words("text"), task_type="single_label",
                      labels=["a", "b"], backbone_name="text", backbone_source="tiny", fingerprint="sha256:" + "0" * 64,
                      preprocessing={}, data=["toy"], hyper={"pooling": "mean", "layers": 2, "hidden": []},
                      metrics={"validation": m}, report_split="validation", best_epoch=1, epochs_run=1,
                      kept_by="lowest validation loss", train_seconds=1.0, device="cpu", created_at="now")
    first = render_card(facts).split("\n## ")[0]
    assert f"**{words}**" in first
    others = {"head adapter", "LoRA adapter", "top-layers adapter"} - {words}
    assert not any(o in first for o in others)
