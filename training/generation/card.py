"""The model card (``README.md``) of a generation task: data, prompt, method, metrics per split,
example outputs from the report split, and how to call it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from training.generation.metrics import METRICS
from training.progress import kept_line

HEADINGS = ["## Summary", "## Data", "## Prompt", "## Method", "## Metrics", "## Examples",
            "## Plots", "## How to use", "## Limitations"]
_NAMES = {"chrf": "chrF", "bleu": "BLEU", "exact_match": "exact match", "token_f1": "token F1"}


@dataclass
class GenerationCardFacts:
    name: str
    summary_line: str
    recipe: str
    backbone_name: str
    backbone_source: str
    fingerprint: str
    data: list[str]
    generation: dict
    hyper: dict
    metrics: dict[str, dict]
    examples: list[tuple[str, str, str]]  # (input, reference, output) from the report split
    history: dict
    seconds: float
    created_at: str
    plot_file: str | None = None
    limitations: list[str] = field(default_factory=list)


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ⏎ ")


def render_generation_card(f: GenerationCardFacts) -> str:
    rows = "\n".join(f"| {s} | {m.get('n', '')} | " + " | ".join(f"{m[k]:.2f}" for k in METRICS) + " |"
                     for s, m in f.metrics.items())
    ex = "\n".join(f"| {_esc(i)} | {_esc(r)} | {_esc(o)} |" for i, r, o in f.examples) or "| (none) | | |"
    curves = ""
    if f.history.get("train_loss"):
        curves = "\n".join(f"| {e + 1} | {t:.4f} | {v:.4f} | {c:.2f} |" for e, (t, v, c) in enumerate(
            zip(f.history["train_loss"], f.history["val_loss"], f.history["val_chrf"])))
        curves = ("\n\nPer epoch (validation chrF on the validation sample):\n\n| epoch | train loss | "
                  "val loss | val chrF |\n|---|---|---|---|\n" + curves +
                  "\n\nK" + kept_line(f.history["best_epoch"], len(f.history["train_loss"]), f.history["kept_by"])[1:]
                  + (" (training stopped by its time budget)" if f.history.get("time_capped") else "") + ".")
    lim = "\n".join(f"- {x}" for x in f.limitations) or "- Scores are on the splits above only."
    return f"""# {f.name}

## Summary

{f.summary_line} Generation task (`task_type: generation`) on `{f.backbone_name}`
(`{f.backbone_source}`, fingerprint `{f.fingerprint[:16]}`). Created {f.created_at}.

## Data

{chr(10).join(f"- {d}" for d in f.data)}

## Prompt

```json
{json.dumps(f.generation, indent=2, ensure_ascii=False)}
```

## Method

{f.recipe} Training took {f.seconds:.1f} s.

| setting | value |
|---|---|
{chr(10).join(f"| {k} | {v} |" for k, v in f.hyper.items())}

## Metrics

Greedy outputs, scored with sacrebleu (corpus chrF and BLEU) and SQuAD's exact match / token F1, 0–100.

| split | n | chrF | BLEU | exact match | token F1 |
|---|---|---|---|---|---|
{rows}{curves}

## Examples

| input | reference | output |
|---|---|---|
{ex}

## Plots

{f"![validation loss and chrF per epoch]({f.plot_file})" if f.plot_file else "(no training: no curves)"}

## How to use

Register the folder (`taskswap register FOLDER --url URL`), then
`POST /v1/chat/completions` or `/v1/completions` with `"model": "{f.name}"`.

## Limitations

{lim}
"""
