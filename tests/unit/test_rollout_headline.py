"""``if_better`` and shadow reports compare versions on the task type's headline metric, as the
training half records it in the manifest: accuracy (single-label), R² (regression), token
accuracy (token classification); a manifest with only ``val_accuracy`` still compares."""

from __future__ import annotations

import random

import numpy as np
import pytest

from service.headline import Headline, if_better, recorded
from service.rollouts import Rollouts
from training.config import TrainConfig
from training.data import LabelledData
from training.data.tokens import TokenData
from training.tokens import train_tokens
from training.trainer import train
from support.training_helpers import sentiment_rows


def _shuffled(xs: list, seed: int = 1) -> list:
    xs = list(xs)
    random.Random(seed).shuffle(xs)
    return xs


def _decide(candidate_metrics: dict, active_metrics: dict) -> dict:
    """The server's verdict on a fit job's result document (what ``_finish_fit`` reads)."""
    return Rollouts._better({"metrics": candidate_metrics,
                             "active": {"comparable": True, "version": "a" * 64, "metrics": active_metrics}})


def _assert_better_wins(good: dict, bad: dict, metric: str) -> None:
    """``good`` beats ``bad`` on ``metric`` (same validation rows), so it is promoted over it,
    and ``bad`` is not promoted over ``good``."""
    assert Headline.of(good).metric == metric and good[metric] > bad[metric]
    up, down = _decide(good, bad), _decide(bad, good)
    assert up["promote"] and not down["promote"]
    assert up["headline"] == metric and up[f"candidate_{metric}"] == good[metric]
    assert up[f"active_{metric}"] == bad[metric] and up["higher_is_better"] is True
    report = recorded(bad, good)  # the shadow report: active bad, candidate good
    assert report["candidate_better"] is True and report["headline"] == metric


def test_if_better_on_r2_for_regression(tmp_path, text_backbone, one_torch_thread):
    rows = sentiment_rows(80)
    rng = np.random.default_rng(0)
    texts = [t for t, _ in rows]
    values = [[(8.0 if y == "pos" else 2.0) + float(rng.normal(0, 0.3))] for _, y in rows]
    fit, val = slice(0, 60), slice(60, 80)
    data = LabelledData("text", texts[fit], [], ["rating"], "toy", values=values[fit])
    wrong = LabelledData("text", texts[fit], [], ["rating"], "toy", values=_shuffled(values[fit]))
    held = LabelledData("text", texts[val], [], ["rating"], "toy", values=values[val])
    cfg = TrainConfig(name="rating", task_type="regression", epochs=60, progress=False)
    good = train(data, text_backbone, cfg, tmp_path / "good", val=held, cache_dir=None).manifest.metrics
    bad = train(wrong, text_backbone, cfg, tmp_path / "bad", val=held, cache_dir=None).manifest.metrics
    assert "val_accuracy" not in good  # what the old comparison read: regression had no verdict
    _assert_better_wins(good, bad, "val_r2")


def test_if_better_on_token_accuracy_for_token_classification(tmp_path, text_backbone, one_torch_thread):
    s = [["good", "film", "is", "fun"], ["the", "great", "movie"], ["a", "bad", "plot"], ["fun", "good", "film"]]
    t = [[1, 2, 0, 0], [0, 1, 2], [0, 0, 0], [0, 1, 2]]
    names = ["O", "B-PER", "I-PER"]
    data = TokenData(s * 4, t * 4, names, "toy")
    wrong = TokenData(s * 4, [[(x + 1) % 3 for x in tags] for tags in t] * 4, names, "toy")
    held = TokenData(s, t, names, "toy")
    cfg = TrainConfig(name="tagger", task_type="token_classification", epochs=30, progress=False)
    good = train_tokens(data, text_backbone, cfg, tmp_path / "good", val=held).manifest.metrics
    bad = train_tokens(wrong, text_backbone, cfg, tmp_path / "bad", val=held).manifest.metrics
    _assert_better_wins(good, bad, "val_token_accuracy")


def test_if_better_on_accuracy_for_single_label(tmp_path, text_backbone, one_torch_thread):
    rows = sentiment_rows(64)
    texts, labels = [t for t, _ in rows], [int(y == "pos") for _, y in rows]
    data = LabelledData("text", texts[:48], labels[:48], ["neg", "pos"], "toy")
    wrong = LabelledData("text", texts[:48], [1 - y for y in labels[:48]], ["neg", "pos"], "toy")
    held = LabelledData("text", texts[48:], labels[48:], ["neg", "pos"], "toy")
    cfg = TrainConfig(name="reviews", epochs=60, progress=False)
    good = train(data, text_backbone, cfg, tmp_path / "good", val=held, cache_dir=None).manifest.metrics
    bad = train(wrong, text_backbone, cfg, tmp_path / "bad", val=held, cache_dir=None).manifest.metrics
    _assert_better_wins(good, bad, "val_accuracy")


def test_old_manifests_compare_on_val_accuracy_and_the_direction_is_the_recorded_one():
    assert _decide({"val_accuracy": 0.9}, {"val_accuracy": 0.7})["promote"]
    assert not _decide({"val_accuracy": 0.7}, {"val_accuracy": 0.9})["promote"]
    # the fit job's record of an active version from before "metrics": flat numbers
    legacy = Rollouts._better({"metrics": {"val_accuracy": 0.9},
                               "active": {"comparable": True, "version": "v", "val_accuracy": 0.8}})
    assert legacy["promote"] and legacy["active_val_accuracy"] == 0.8
    lower = {"headline": {"metric": "val_mae", "name": "MAE", "higher_is_better": False}}
    assert _decide({**lower, "val_mae": 0.1}, {"val_mae": 0.3})["promote"]
    assert not _decide({**lower, "val_mae": 0.3}, {"val_mae": 0.1})["promote"]
    assert not _decide({"val_r2": 0.5, "headline": {"metric": "val_r2"}}, {})["promote"]  # nothing to beat
    assert if_better({"val_accuracy": 0.5}, None)["promote"]  # no active version
    assert not if_better({"val_accuracy": 0.5}, {"comparable": False, "reason": "labels differ"})["promote"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.9", True, None])
def test_a_headline_that_is_not_a_finite_number_never_wins(value):
    assert not _decide({"val_accuracy": value}, {"val_accuracy": 0.1})["promote"]
