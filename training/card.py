"""The model card (``README.md``) of a trained adapter, rendered from ``templates/model_card.md``.

The template fixes the structure (a test checks its headings and metrics table); this
module only turns a run's facts into table rows and sentences. The words that depend on
the method (what the folder is, how it was trained) come from its
:class:`~training.methods.TrainingMethod`, those that depend on the task type (its outputs,
its loss) from its :class:`~training.tasks.TrainingTask`; the trainers put them in the facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from training.metrics import SplitMetrics
from training.progress import kept_line

TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"
HEADINGS = ["## Summary", "## Data", "## Method", "## Hyper-parameters", "## Metrics",
            "## Per-class report", "## Plots", "## How to use", "## Limitations"]


@dataclass
class CardFacts:
    name: str
    method: str
    summary_line: str  # the method's first line: "A Taskswap **LoRA adapter** for ..."
    recipe: str  # the method's Method section (``str.format`` fields, see TrainingMethod.recipe)
    servable: bool  # an adapter (else a baseline report)
    task_type: str
    labels: list[str]
    backbone_name: str
    backbone_source: str
    fingerprint: str
    preprocessing: dict
    data: list[str]  # one line per fact about the data
    hyper: dict
    metrics: dict[str, SplitMetrics]  # split name -> metrics ("train", "validation", "test")
    report_split: str
    best_epoch: int
    epochs_run: int
    kept_by: str  # the selection rule that chose best_epoch, in words (training.progress)
    train_seconds: float
    device: str
    created_at: str
    n_train: int = 0
    lora_targets: list[str] = field(default_factory=list)
    plot_file: str | None = "confusion_matrix.png"  # the task type's evaluation plot
    outputs_word: str = "labels"  # what the task type calls its outputs
    loss_words: str = "cross-entropy"  # its training loss, in words
    label_note: str = ""  # set when the labels are not human-made (silver): said in Data and Limitations
    method_limitations: tuple[str, ...] = ()  # the method's own lines under Limitations


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
    servable = f.servable
    ctx = {
        "name": f.name, "task_type": f.task_type, "method": f.method,
        "kind_line": f.summary_line,
        "labels": ", ".join(f"`{x}`" for x in f.labels),
        "outputs_word": f.outputs_word,
        "backbone_name": f.backbone_name, "backbone_source": f.backbone_source,
        "fingerprint": f.fingerprint[:23] + "…", "preprocessing": _fmt(
            ", ".join(f"{k} {v}" for k, v in sorted(f.preprocessing.items())) or "none"),
        "servable": "yes" if servable else "no (random-init weights, not the served backbone)",
        "created_at": f.created_at, "train_seconds": f"{f.train_seconds:.1f}", "device": f.device,
        "data": "\n".join(f"- {line}" for line in f.data),
        "method_text": f.recipe.format(
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
        "kept_line": "K" + kept_line(f.best_epoch, f.epochs_run, f.kept_by)[1:],
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
        predict = (f"curl -F files=@photo.jpg -F task={f.name} \"$TASKSWAP_URL/predict/upload\"")
    else:
        predict = (f"curl -H 'Content-Type: application/json' \"$TASKSWAP_URL/predict\" \\\n"
                   f"     -d '{{\"task\": \"{f.name}\", \"texts\": [\"an example\"]}}'")
    return ("Register this folder with a running server (admin token), then predict:\n\n"
            "```bash\n"
            "export TASKSWAP_URL=${TASKSWAP_URL:-http://127.0.0.1:3000}   # the server\n"
            "taskswap register . --token $TASKSWAP_ADMIN_TOKEN\n"
            f"{predict}\n"
            "taskswap evaluate . --data more-labelled-data.csv   # score it on other labelled data\n"
            "```")


def _limitations(f: CardFacts) -> str:
    lines = [f"- Trained on {f.n_train} examples; the metrics above hold for data like the "
             "training data only.",
             "- Validation metrics were used for early stopping, so they are slightly optimistic; "
             "the `test` row (when present) is a held-out split never used in training."]
    lines += [f"- {line}" for line in f.method_limitations]
    if f.label_note:
        lines.append(f"- **The labels are model-made (silver), not human annotations**: {f.label_note}. "
                     "The metrics measure agreement with that model, errors included, not accuracy "
                     "against the truth; this adapter cannot be better than its labeller on them.")
    return "\n".join(lines)
