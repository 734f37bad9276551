"""Score a generation task on examples: a folder in-process, or a task a server answers.

Both decode greedily, at most ``max_new_tokens`` tokens per example, and score with
:func:`training.generation.metrics.generation_scores`: the numbers the trainer reports.

- a folder: its LoRA (PEFT ``from_pretrained`` on a copy of the language model) or its prompt
  alone, through :func:`training.generation.decode.greedy_texts`;
- a served task: one ``POST /v1/completions`` per prompt/completion example (``/v1/chat/completions``
  for chat examples) with ``temperature: 0``, a few in flight at a time (the server batches them).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from peft import PeftModel

from adapters.backbones.base import BackboneSpec
from adapters.backbones.causal_lm import LMBackbone, load_lm_backbone
from adapters.errors import IncompatibleAdapter, InvalidInput
from adapters.format.adapter_dir import parse_manifest, read_json
from adapters.format.manifest import GenerationSpec
from adapters.tasks import task_type
from training.generation.data import GenerationData, GenerationExample
from training.generation.decode import greedy_texts
from training.generation.metrics import generation_scores


@dataclass
class GenerationEvaluation:
    task: str
    version: str
    scores: dict
    """``{"n", "chrf", "bleu", "exact_match", "token_f1"}``."""
    outputs: list[str]


def load_generation_folder(folder: Path, backbone: LMBackbone) -> tuple[object, str, GenerationSpec]:
    """``(model, name, settings)``: the folder's LoRA on a copy of ``backbone``'s model (or the
    frozen model itself for a prompt-only task), after checking the fingerprint. A plain PEFT
    folder (no ``adapter.json``) gets the default generation settings."""
    folder = Path(folder)
    has_lora = (folder / "adapter_model.safetensors").is_file()
    if (folder / "adapter.json").is_file():
        m = parse_manifest(read_json(folder / "adapter.json"))
        if not task_type(m.task_type).generates:
            raise InvalidInput(f"{folder} is a {m.task_type} adapter; evaluate it without generation options")
        if m.backbone.fingerprint and m.backbone.fingerprint != backbone.fingerprint:
            raise IncompatibleAdapter(f"{folder} was trained on {m.backbone.fingerprint[:19]}, the language "
                                      f"model given is {backbone.fingerprint[:19]}; pass --backbone with its model")
        name, spec = m.name, m.generation or GenerationSpec()
    elif has_lora:
        name, spec = folder.name, GenerationSpec()
    else:
        raise InvalidInput(f"{folder} holds neither adapter.json nor adapter_model.safetensors")
    if not has_lora:
        return backbone.model, name, spec
    return PeftModel.from_pretrained(copy.deepcopy(backbone.model), str(folder)).eval(), name, spec


def evaluate_generation_folder(folder: Path, data: GenerationData, backbone: LMBackbone | BackboneSpec,
                               max_new_tokens: int, batch_size: int = 16) -> GenerationEvaluation:
    """Greedy outputs of the folder's task on ``data`` and their scores.

    ``backbone``: the language model (a spec is loaded; default: the manifest's source)."""
    if isinstance(backbone, BackboneSpec):
        backbone = load_lm_backbone(backbone)
    model, name, spec = load_generation_folder(folder, backbone)
    hyps = greedy_texts(model, backbone.tokenizer, data.examples, spec, backbone.eos_token_ids,
                        min(max_new_tokens, spec.max_new_tokens), batch_size=batch_size)
    return GenerationEvaluation(name, "folder", {"n": len(hyps), **generation_scores(
        hyps, [e.completion for e in data.examples])}, hyps)


def _ask(client: httpx.Client, task: str, e: GenerationExample, max_tokens: int) -> tuple[str, str]:
    body = {"model": task, "max_tokens": max_tokens, "temperature": 0}
    if e.messages is not None:
        r = client.post("/v1/chat/completions", json={**body, "messages": [dict(m) for m in e.messages]})
    else:
        r = client.post("/v1/completions", json={**body, "prompt": e.prompt})
    if r.status_code != 200:
        raise InvalidInput(f"the server answered {r.status_code} for task {task!r}: {r.text[:300]}")
    choice = r.json()["choices"][0]
    text = choice["message"]["content"] if e.messages is not None else choice["text"]
    return text, r.json().get("model", task)


def evaluate_served_generation(url: str, task: str, data: GenerationData, max_new_tokens: int,
                               token: str | None = None, in_flight: int = 8,
                               timeout_s: float = 300.0) -> GenerationEvaluation:
    """Greedy outputs of served task ``task`` on ``data`` (OpenAI routes) and their scores."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client, \
            ThreadPoolExecutor(in_flight) as pool:
        answers = list(pool.map(lambda e: _ask(client, task, e, max_new_tokens), data.examples))
    hyps = [a[0] for a in answers]
    version = answers[0][1] if answers else task
    return GenerationEvaluation(task, version, {"n": len(hyps), **generation_scores(
        hyps, [e.completion for e in data.examples])}, hyps)
