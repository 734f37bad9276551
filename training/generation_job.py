"""The generation half of a server fit job (``python -m training.fit_job``): a LoRA trained on
examples sent to ``POST /adapters/{task}/fit``.

The same :func:`training.generation_run.train_generation` as ``taskswap train --task-type
generation --method lora`` (same checks, phases, card and metrics). With ``compare_with`` (the
task's active version folder) the active version is scored on the *same* validation examples,
greedy, with the same metrics, so ``promote: if_better`` compares like with like (chrF).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from adapters.backbones.base import BackboneSpec
from adapters.backbones.causal_lm import load_lm_backbone
from adapters.errors import InvalidInput
from adapters.format.manifest import GenerationSpec
from training.config import TrainConfig
from training.generation.data import GenerationData, example_from_json
from training.generation.evaluate import evaluate_generation_folder
from training.generation_run import check_generation, train_generation

DEFAULT_SPEC = GenerationSpec(prompt_format="chat")
"""A fit request without ``generation`` settings: the chat template, nothing else."""


def phase(name: str, **extra) -> None:
    """One progress line the server reads (``{"phase": ...}``)."""
    print(json.dumps({"phase": name, "at": time.time(), **extra}), flush=True)


def job_data(spec: dict) -> GenerationData:
    problems: list[str] = []
    examples = [example_from_json(e, f"examples[{i}]", problems) for i, e in enumerate(spec["examples"])]
    InvalidInput.collect(problems, "examples")
    return GenerationData(examples, "examples sent over HTTP")


def run_generation(spec: dict, out: Path) -> dict:
    """Fit a LoRA, export to ``out/adapter``, compare; returns the result document."""
    torch.set_num_threads(int(spec.get("threads") or 1))
    o = spec.get("options") or {}
    config = TrainConfig(name=spec["name"], method="lora", task_type="generation", epochs=o.get("epochs"),
                         lr=o.get("lr"), lora_r=o.get("lora_r") or 8, val_fraction=o.get("val_fraction", 0.2),
                         seed=o.get("seed", 0), max_train_minutes=o.get("max_minutes"), progress=False)
    gen = GenerationSpec(**spec["generation"]) if spec.get("generation") else DEFAULT_SPEC
    data = job_data(spec)
    check_generation(data, None, config, gen, None)  # the CLI's data errors, before the model loads
    phase("loading_backbone")
    backbone = load_lm_backbone(BackboneSpec(**spec["backbone"]))
    phase("fitting", examples=len(data))
    result = train_generation(data, backbone, config, gen, out / "adapter")
    doc = {"status": "fitted", "seconds": result.seconds, "examples": result.manifest.training["examples"],
           "metrics": result.manifest.metrics, "best_epoch": result.history["best_epoch"],
           "epochs_run": len(result.history["train_loss"])}
    if spec.get("compare_with"):
        phase("comparing")
        val = result.scored["validation"]
        active = Path(spec["compare_with"])
        ev = evaluate_generation_folder(active, val, backbone, gen.max_new_tokens)
        doc["active"] = {"comparable": True, "version": active.name,
                         "metrics": {f"val_{k}": v for k, v in ev.scores.items()}}
    return doc
