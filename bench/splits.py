"""The labelled and test examples the accuracy benches train and score on (one split for all).

Text: Rotten Tomatoes on MiniLM-L6; vision: Fashion-MNIST on MobileNetV2 at 96 px. Shared by
``python -m bench top-layers-compare`` and ``python -m bench peft-plain``.
"""

from __future__ import annotations

from bench.common import TEXT_SPEC, VISION_SPEC
from training.data import stratified_sample
from training.data.demo import load_demo

DATASET = {"text": ("rotten-tomatoes", TEXT_SPEC), "vision": ("fashion-mnist", VISION_SPEC)}


def labelled_and_test(per_class: int, seed: int, n_test: int, modality: str = "text", dev: bool = False):
    """(labelled, test): ``per_class`` x classes labelled examples sampled with ``seed`` from
    the demo's train split, and ``n_test`` test examples, the same for every seed.
    ``dev``: the test examples are drawn from the rest of the train split instead (for
    choosing defaults without looking at the test split)."""
    name = DATASET[modality][0]
    if dev:
        if modality != "text":
            raise SystemExit("--dev is for text only")
        pool = load_demo(name, "train", seed=0)
        labelled = stratified_sample(pool, per_class * len(pool.label_names), seed)
        taken = set(labelled.inputs)
        rest = pool.subset([i for i, x in enumerate(pool.inputs) if x not in taken])
        return labelled, stratified_sample(rest, n_test, 1000 + seed)
    if modality == "vision":  # Fashion-MNIST has its own train/test files; sample while reading
        return (load_demo(name, "train", limit=10 * per_class, seed=seed),
                load_demo(name, "test", limit=n_test, seed=0))
    pool = load_demo(name, "train", seed=0)
    labelled = stratified_sample(pool, per_class * len(pool.label_names), seed)
    labelled.source = f"{pool.source}; {len(labelled)} sampled with seed {seed}"
    return labelled, load_demo(name, "test", limit=n_test, seed=0)
