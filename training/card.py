"""The model card (``README.md``) of a trained adapter, rendered from ``templates/model_card.md``.

The template fixes the structure (a test checks its headings and metrics table); this
module only turns a run's facts into table rows and sentences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from training.metrics import Metrics

TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"
HEADINGS = ["## Summary", "## Data", "## Method", "## Hyper-parameters", "## Metrics",
            "## Per-class report", "## Plots", "## How to use", "## Limitations"]

_METHOD_TEXT = {
    "head": ("The backbone stays frozen. Its pooled features (`{pooling}` pooling) were computed "
             "once for every example and cached; a {head} was fitted on them with AdamW and "
             "{loss}, features standardised during fitting (folded into the saved weights)."),
    "lora": ("LoRA (rank {lora_r}, alpha {lora_alpha}) on `{targets}` of the backbone, trained jointly "
             "with a {head} on `{pooling}`-pooled features ({start}) with AdamW, warm-up then linear "
             "decay. The base weights are unchanged; the server applies this adapter's low-rank "
             "deltas per row."),
    "top_layers": ("The backbone's last `{layers}` blocks were fine-tuned (a copy, with layer-wise learning "
                   "rates, warm-up then linear decay, weight decay, the blocks' own dropout) jointly with a "
                   "{head} on `{pooling}`-pooled features; the blocks below stay frozen and shared. "
                   "The server runs the shared trunk up to the split once, then this adapter's blocks."),
    "scratch": ("Baseline: the backbone's architecture (same config) initialised at random and trained "
                "end to end with a {head} on `{pooling}`-pooled features. It shows what the "
                "pretrained weights buy; it is not an adapter of the frozen backbone."),
}

# Per-token heads (``pooling: "tokens"``): no pooling, one row per word.
_METHOD_TEXT_TOKENS = {
    "head": ("The backbone stays frozen. Each sentence was tokenised as its words; the features of "
             "each word's first sub-token were computed once, and a {head} was fitted on them with "
             "AdamW and {loss}, features standardised during fitting (folded into the saved "
             "weights). At serving time the head runs on every token and a word takes its first "
             "sub-token's label."),
    "lora": ("LoRA (rank {lora_r}, alpha {lora_alpha}) on `{targets}` of the backbone, trained jointly "
             "with a {head} on each word's first sub-token ({loss}). The head was first fitted on "
             "frozen features, then LoRA and head were trained together with AdamW. The base "
             "weights are unchanged; the server applies this adapter's low-rank deltas per row."),
    "scratch": ("No pretrained weights: a BiGRU tagger (sub-token embedding over the backbone's "
                "tokenizer vocabulary, one bidirectional GRU layer, a linear layer over tags) trained "
                "from random initialisation on each word's first sub-token ({loss}) with AdamW, "
                "keeping the state with the lowest validation loss. A baseline to compare a `head` "
                "or `lora` adapter with, not an adapter."),
}


@dataclass
class CardFacts:
    name: str
    method: str
    task_type: str
    labels: list[str]
    backbone_name: str
    backbone_source: str
    fingerprint: str
    preprocessing: dict
    data: list[str]  # one line per fact about the data
    hyper: dict
    metrics: dict[str, Metrics]  # split name -> metrics ("train", "validation", "test")
    report_split: str
    best_epoch: int
    epochs_run: int
    train_seconds: float
    device: str
    created_at: str
    n_train: int = 0
    lora_targets: list[str] = field(default_factory=list)
    plot_file: str | None = "confusion_matrix.png"  # the task type's evaluation plot
    outputs_word: str = "labels"  # what the task type calls its outputs
    loss_words: str = "cross-entropy"  # its training loss, in words
    label_note: str = ""  # set when the labels are not human-made (silver): said in Data and Limitations


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(map(str, v)) if v else "[]"
    return str(v)


def _head_words(hyper: dict) -> str:
    hidden = hyper.get("hidden") or []
    return "linear head" if not hidden else f"MLP head (hidden {hidden}, {hyper.get('activation')})"


def render_card(f: CardFacts) -> str:
    """The card's Markdown for one run."""
    servable = f.method != "scratch"
    ctx = {
        "name": f.name, "task_type": f.task_type, "method": f.method,
        "kind_line": (f"A Taskswap **{'LoRA' if f.method == 'lora' else 'head'} adapter** for the "
                      f"frozen backbone `{f.backbone_name}`." if servable else
                      "A **from-scratch baseline report** (no adapter: not servable on the frozen backbone)."),
        "labels": ", ".join(f"`{x}`" for x in f.labels),
        "outputs_word": f.outputs_word,
        "backbone_name": f.backbone_name, "backbone_source": f.backbone_source,
        "fingerprint": f.fingerprint[:23] + "…", "preprocessing": _fmt(
            ", ".join(f"{k} {v}" for k, v in sorted(f.preprocessing.items())) or "none"),
        "servable": "yes" if servable else "no (random-init weights, not the served backbone)",
        "created_at": f.created_at, "train_seconds": f"{f.train_seconds:.1f}", "device": f.device,
        "data": "\n".join(f"- {line}" for line in f.data),
        "method_text": (_METHOD_TEXT_TOKENS if f.hyper.get("pooling") == "tokens" else _METHOD_TEXT)[f.method].format(
            pooling=f.hyper.get("pooling"), head=_head_words(f.hyper), lora_r=f.hyper.get("lora_r"),
            lora_alpha=f.hyper.get("lora_alpha"), targets=", ".join(f.lora_targets),
            loss=f.loss_words, layers=f.hyper.get("layers"),
            start="the head first fitted on frozen features" if f.hyper.get("warm_start")
            else "a fresh head, trained on standardised features and folded"),
        "hyper_rows": "\n".join(f"| {k} | {_fmt(v)} |" for k, v in f.hyper.items()),
        "metric_header": next(iter(f.metrics.values())).CARD_HEADER,
        "metric_rows": "\n".join(m.card_row(split) for split, m in f.metrics.items()),
        "detail_title": f.metrics[f.report_split].DETAIL_TITLE,
        "plot_line": (f"![{f.plot_file[:-4].replace('_', ' ')} ({f.report_split})]({f.plot_file})"
                      if f.plot_file else ""),
        "best_epoch": str(f.best_epoch), "epochs_run": str(f.epochs_run),
        "report_split": f.report_split,
        "class_rows": f.metrics[f.report_split].detail_table(),
        "usage": _usage(f, servable),
        "limitations": _limitations(f),
    }
    return Template(TEMPLATE.read_text()).substitute(ctx)


def _usage(f: CardFacts, servable: bool) -> str:
    if not servable:
        return "Not servable. Compare its metrics with a `head` or `lora` adapter on the same data."
    if f.preprocessing.get("image_size"):
        predict = (f"curl -F files=@photo.jpg -F task={f.name} http://127.0.0.1:3000/predict/upload")
    else:
        predict = (f"curl -H 'Content-Type: application/json' http://127.0.0.1:3000/predict \\\n"
                   f"     -d '{{\"task\": \"{f.name}\", \"texts\": [\"an example\"]}}'")
    return ("Register this folder with a running server (admin token), then predict:\n\n"
            "```bash\n"
            "taskswap register . --url http://127.0.0.1:3000 --token $TASKSWAP_ADMIN_TOKEN\n"
            f"{predict}\n"
            "taskswap evaluate . --data more-labelled-data.csv   # score it on other labelled data\n"
            "```")


def _limitations(f: CardFacts) -> str:
    lines = [f"- Trained on {f.n_train} examples; the metrics above hold for data like the "
             "training data only.",
             "- Validation metrics were used for early stopping, so they are slightly optimistic; "
             "the `test` row (when present) is a held-out split never used in training."]
    if f.method == "scratch":
        lines.append("- Random initialisation: no pretrained knowledge; expect it to need far more data.")
    if f.label_note:
        lines.append(f"- **The labels are model-made (silver), not human annotations**: {f.label_note}. "
                     "The metrics measure agreement with that model, errors included, not accuracy "
                     "against the truth; this adapter cannot be better than its labeller on them.")
    return "\n".join(lines)
