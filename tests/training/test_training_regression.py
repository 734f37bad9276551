"""The regression task type through training: ``taskswap train --task-type regression`` for
the head and LoRA methods, target scaling stored with the adapter, MAE/RMSE/R²/Spearman per
split, a model card and a predicted-vs-true plot, and served values equal to what training
reported; plus the Whissell demo data set."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from adapters.backbones.base import load_backbone
from adapters.backbones.tiny import tiny_backbone_spec
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from training import cli
from training.data import load_demo
from support.training_helpers import sentiment_rows


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    return tiny_backbone_spec("text", tmp_path_factory.mktemp("reg-text") / "text").source


def write_ratings(path, n=80):
    """Texts with two real targets: ``rating`` high for positive words, ``noise`` random."""
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "rating", "length"])
        for text, label in sentiment_rows(n):
            w.writerow([text, round((8.0 if label == "pos" else 2.0) + rng.normal(0, 0.3), 3),
                        len(text)])
    return path


@pytest.mark.parametrize("method", ["head", "lora"])
def test_train_regression_and_serve_the_same_values(tmp_path, text_folder, capsys, method):
    data = write_ratings(tmp_path / "ratings.csv")
    out = tmp_path / "out"
    args = ["train", "--name", "rating", "--task-type", "regression", "--data", data,
            "--target-columns", "rating,length", "--backbone", text_folder, "--method", method,
            "--out", out, "--quiet", "--no-cache"]
    if method == "lora":
        # The head warm start makes two epochs on toy data enough to check the plumbing.
        args += ["--epochs", "2", "--lr", "0.005", "--warm-start"]
    assert cli.main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert "R²" in capsys.readouterr().out
    m = json.loads((out / "adapter.json").read_text())
    assert (m["task_type"], m["outputs"], m["kind"]) == ("regression", ["rating", "length"], method)
    assert "labels" not in m or m["labels"] == []
    assert set(m["target_scaling"]) == {"rating", "length"} and m["target_scaling"]["rating"]["std"] > 1
    assert {"val_mae", "val_rmse", "val_r2", "val_spearman"} <= set(m["metrics"])
    assert (out / "predicted_vs_true.png").stat().st_size > 1000
    card = (out / "README.md").read_text()
    assert "## Per-output report" in card and "predicted_vs_true.png" in card and "| outputs |" in card
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["validation"]
    assert metrics["per_output"]["rating"]["r2"] > 0.5, metrics  # positive vs negative words: learnable

    bb = load_backbone(tiny_backbone_spec("text", text_folder))
    reg = Registry(open_store(str(tmp_path / "store")), {"text": bb})
    reg.register(out)
    rt = Runtime(reg)
    texts = [t for t, _ in sentiment_rows(6, seed=3)]
    res = rt.run([rt.prepare(["rating"], texts, "text")])[0][0]
    served = torch.tensor([[r.values["rating"], r.values["length"]] for r in res.rows])
    pos = [i for i, (_, lab) in enumerate(sentiment_rows(6, seed=3)) if lab == "pos"]
    neg = [i for i in range(6) if i not in pos]
    assert served[pos, 0].mean() > served[neg, 0].mean() + 2  # in the targets' units, not standardised


def test_regression_data_problems_are_named_before_training(tmp_path, text_folder, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,rating\ngood,4\nbad,oops\nfine,nan\n")
    code = cli.main(["train", "--name", "r", "--task-type", "regression", "--data", str(bad),
                     "--target-columns", "rating", "--backbone", text_folder, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "non-numeric or non-finite 'rating' in" in err and "row 2" in err and "row 3" in err, err
    ok = write_ratings(tmp_path / "ok.csv", 20)
    code = cli.main(["train", "--name", "r", "--data", str(ok), "--target-columns", "rating",
                     "--backbone", text_folder, "--quiet"])  # real targets, classification asked
    assert code == 2 and "--task-type regression" in capsys.readouterr().err


def test_whissell_demo_is_three_rated_outputs():
    train, test = load_demo("whissell", "train"), load_demo("whissell", "test", limit=100)
    assert len(train) + len(load_demo("whissell", "test")) == 8743
    assert train.label_names == ["pleasantness", "activation", "imagery"] and train.task_type == "regression"
    assert len(test) == 100 and all(len(v) == 3 for v in test.values)
    assert not set(train.inputs) & set(load_demo("whissell", "test").inputs)
