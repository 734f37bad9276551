"""Score a tagger (a ``token_classification`` adapter folder) on tagged sentences, as served.

As :mod:`training.evaluate` does for pooled tasks, the adapter is registered into a
throwaway local store (the checks of ``POST /adapters``) and run by the server's
:class:`adapters.runtime.Runtime`, so the tags are what the server would answer. Each
sentence of the CoNLL/JSONL file is sent as its words joined by single spaces; the server
splits it into its own words (the tokenizer's pre-tokenisation) and labels each by its first
sub-token. A file word's predicted tag is the tag of the served word that starts where it
starts — the first sub-token of the file word, the same token the trainer put the word's tag
on — so a file word the tokenizer splits further (``U.S.``, ``don't``) is scored once.
Sentences longer than the backbone's ``max_length`` are tagged whole (stride windows), as
the server does. Metrics: entity-level P/R/F1 per type (seqeval's definition), token
accuracy over words, and the confusion matrix over tags
(:func:`adapters.tasks.token_metrics.token_metrics`).

    taskswap evaluate out/ner --data ner-test.jsonl
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone
from adapters.errors import InvalidInput
from adapters.plugin_checks import read_adapter_dir
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from adapters.tasks import task_type
from adapters.tasks.token_metrics import TokenMetrics, token_metrics
from training.data.tokens import TokenData
from training.evaluate import backbone_spec_for
from training.progress import work


@dataclass
class TokenEvaluation:
    task: str
    version: str
    metrics: TokenMetrics
    unmatched_words: int  # file words no served word starts at (characters the tokenizer drops); scored as "O"


def is_tagger(adapter_dir: Path) -> bool:
    """True for a tagger's folder: a task type that reads per-token features
    (``token_classification``), by our manifest or PEFT's ``TOKEN_CLS``."""
    adir = read_adapter_dir(Path(adapter_dir))
    if adir.manifest is not None:
        return task_type(adir.manifest.task_type).features == "tokens"
    return (adir.peft_config or {}).get("task_type") == "TOKEN_CLS"


def sentence_text(words: list[str]) -> tuple[str, list[int]]:
    """The words joined by single spaces, and each word's start offset.

    >>> sentence_text(["New", "York", "."])
    ('New York .', [0, 4, 9])
    """
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    return " ".join(words), starts


def served_tags(rows: list[list[tuple[int, str]]], starts: list[list[int]], labels: list[str]
                ) -> tuple[list[list[int]], int]:
    """Per sentence, the tag index of each file word (the served word starting at its offset),
    and how many file words had none: the server gave them no tag, so they read as ``O`` (no
    entity; the first tag for a label set without ``O``)."""
    pos = {lab: i for i, lab in enumerate(labels)}
    none = pos.get("O", 0)
    out, unmatched = [], 0
    for row, st in zip(rows, starts):  # row: the served words' (start, label)
        at = {start: pos[label] for start, label in row}
        unmatched += sum(s not in at for s in st)
        out.append([at.get(s, none) for s in st])
    return out, unmatched


def evaluate_tagger(adapter_dir: Path, data: TokenData, backbone: Backbone | BackboneSpec | None = None,
                    labels: list[str] | None = None, batch_size: int = 64, progress: bool = True
                    ) -> TokenEvaluation:
    """Register ``adapter_dir`` in a temp store and tag ``data``'s sentences with the runtime.

    ``data.label_names`` must be the adapter's tags (load the file with ``labels=`` them);
    ``labels`` names a PEFT directory's outputs (as at registration).
    """
    if backbone is None or isinstance(backbone, BackboneSpec):
        backbone = load_backbone(backbone_spec_for(adapter_dir, backbone))
    with tempfile.TemporaryDirectory(prefix="taskswap-eval-") as tmp:
        registry = Registry(open_store(tmp), {backbone.name: backbone})
        # a plain PEFT directory has no name of its own: any valid one will do here
        name = None if (Path(adapter_dir) / "adapter.json").exists() else "evaluated"
        loaded = registry.register(Path(adapter_dir), name=name, labels=labels)
        if loaded.task.features != "tokens":
            raise InvalidInput(f"{adapter_dir} is a {loaded.manifest.task_type} adapter, not a tagger; "
                               "evaluate it on labelled texts (text,label)")
        if list(loaded.labels) != list(data.label_names):
            raise InvalidInput(f"the data's tags {data.label_names} are not the adapter's tags "
                               f"{loaded.labels}; load the data with labels={loaded.labels}")
        runtime = Runtime(registry)
        texts, starts = zip(*(sentence_text(s) for s in data.sentences)) if len(data) else ((), ())
        rows = []
        with work(len(texts), "evaluate", progress, unit="sentences") as bar:
            for start in range(0, len(texts), batch_size):
                chunk = list(texts[start:start + batch_size])
                answer = runtime.run([runtime.prepare([loaded.name], chunk, "text")])[0][0]
                rows += [[(w["start"], w["label"]) for w in r.words] for r in answer.rows]
                bar.update(len(chunk))
    pred, unmatched = served_tags(rows, list(starts), list(loaded.labels))
    metrics = token_metrics(data.tags, pred, list(data.label_names))
    return TokenEvaluation(loaded.name, loaded.version, metrics, unmatched)


def evaluate_served_tagger(client, task: str, data: TokenData, batch_size: int = 64,
                           progress: bool = True) -> TokenEvaluation:
    """:func:`evaluate_tagger` on the answers of a running server (a :class:`taskswap_client.Client`);
    every answer must come from one adapter version (else evaluate again)."""
    texts, starts = zip(*(sentence_text(s) for s in data.sentences)) if len(data) else ((), ())
    rows, versions = [], []
    with work(len(texts), "evaluate", progress, unit="sentences") as bar:
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            result = client.predict(task, texts=chunk).results[0]
            versions.append(result.version)
            rows += [[(w.start, w.label) for w in p.words or []] for p in result.predictions]
            bar.update(len(chunk))
    if len(set(versions)) > 1:
        raise InvalidInput(f"task {task!r} changed version during the evaluation "
                           f"({', '.join(sorted({v[:12] for v in versions}))}); evaluate again")
    unknown = sorted({lab for r in rows for _, lab in r} - set(data.label_names))
    if unknown:
        raise InvalidInput(f"task {task!r} answers tags {unknown[:10]} the data does not have; load the "
                           "data with the task's labels")
    pred, unmatched = served_tags(rows, list(starts), list(data.label_names))
    return TokenEvaluation(task, versions[0] if versions else "", token_metrics(data.tags, pred,
                                                                                list(data.label_names)), unmatched)


def print_token_evaluation(ev: TokenEvaluation, data: TokenData, max_confusion_tags: int = 12) -> None:
    """Entity P/R/F1 per type, token accuracy and (for up to ``max_confusion_tags`` tags) the
    confusion matrix over tags, rows = gold, columns = predicted."""
    m = ev.metrics
    print(f"{ev.task} (version {ev.version[:12]}) on {m.sentences} sentences, {m.n} words of {data.source}")
    if data.label_note:
        print(f"note: the data's tags are model-made ({data.label_note})")
    print(f"token accuracy {m.accuracy:.4f}  entity precision {m.precision:.4f}  recall {m.recall:.4f}  "
          f"F1 {m.f1:.4f}")
    if ev.unmatched_words:
        print(f"{ev.unmatched_words} words had no served word starting at them (scored as 'O')")
    print(f"{'type':<20}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}")
    for t in m.per_type:
        print(f"{t.label:<20}{t.precision:>10.3f}{t.recall:>8.3f}{t.f1:>8.3f}{t.support:>9}")
    names = list(data.label_names)
    if len(names) <= max_confusion_tags:
        width = max(7, *(len(n) + 1 for n in names))
        print("confusion over tags (rows: gold, columns: predicted)")
        print(" " * width + "".join(f"{n:>{width}}" for n in names))
        for n, row in zip(names, m.confusion):
            print(f"{n:<{width}}" + "".join(f"{c:>{width}}" for c in row))
    else:
        print(f"({len(names)} tags: the confusion matrix is in --json)")
