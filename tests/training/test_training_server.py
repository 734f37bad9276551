"""Trained adapters registered with a real ``bentoml serve`` over HTTP (``--register``), and
served scores equal to what the trainer reported."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from adapters.backbones.tiny import tiny_backbone_spec
from support.server import server_factory  # noqa: F401  (pytest fixture)
from training import cli
from training.config import TrainConfig
from training.register import RegistrationFailed, register_with_server
from training.sources import DataSource
from training.trainer import train
from support.training_helpers import sentiment_rows, write_text_csv

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("srv-backbones")
    return {"text": tiny_backbone_spec("text", root / "text"), "vision": tiny_backbone_spec("vision", root / "vision")}


@pytest.fixture(scope="module")
def srv(server_factory, specs, tmp_path_factory):  # noqa: F811
    backbones = [{"name": s.name, "source": s.source, "max_length": s.max_length, "image_size": s.image_size}
                 for s in specs.values()]
    return server_factory.start(store=tmp_path_factory.mktemp("srv-store"), backbones=backbones)


def _scores(resp, labels) -> torch.Tensor:
    assert resp.status_code == 200, resp.text
    preds = resp.json()["results"][0]["predictions"]
    return torch.tensor([[p["scores"][lab] for lab in labels] for p in preds])


def test_cli_train_register_then_predict_over_http(srv, specs, tmp_path, capsys):
    train_csv = write_text_csv(tmp_path / "train.csv", sentiment_rows(60, seed=0))
    test_rows = sentiment_rows(16, seed=3)
    test_csv = write_text_csv(tmp_path / "test.csv", test_rows)
    out = tmp_path / "adapter"
    code = cli.main(["train", "--name", "reviews", "--data", str(train_csv), "--test-data", str(test_csv),
                     "--backbone", specs["text"].source, "--backbone-name", "text", "--epochs", "150",
                     "--lr", "0.01", "--out", str(out), "--quiet", "--no-cache",
                     "--register", srv.url, "--token", srv.admin])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"registered reviews version " in printed.out

    listed = srv.get("/adapters").json()["adapters"]
    assert [a["name"] for a in listed] == ["reviews"]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["test"]
    resp = srv.predict("reviews", texts=[t for t, _ in test_rows])
    served = _scores(resp, ["neg", "pos"])
    truth = torch.tensor([1 if y == "pos" else 0 for _, y in test_rows])
    assert float((served.argmax(1) == truth).float().mean()) == pytest.approx(metrics["accuracy"])
    from training.evaluate import evaluate_adapter
    ev = evaluate_adapter(out, DataSource(path=test_csv, labels=["neg", "pos"]).load(), progress=False)
    assert torch.allclose(served, ev.probs, atol=1e-5)

    # A wrong token: exit 1 and the server's own reason.
    code = cli.main(["register", str(out), "--url", srv.url, "--token", "wrong"])
    assert code == 1 and "HTTP 401" in capsys.readouterr().err


def _ratings_csv(path, rows, seed):
    """``text,rating,length``: ``rating`` high for positive words, ``length`` the text's."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "rating", "length"])
        for text, label in rows:
            w.writerow([text, round((8.0 if label == "pos" else 2.0) + rng.normal(0, 0.3), 3), len(text)])
    return path


def test_regression_evaluated_from_folder_and_server_with_the_trainers_numbers(srv, specs, tmp_path, capsys):
    """``taskswap evaluate`` scores a regression task, in process and through ``--url``, with
    the MAE/RMSE/R²/Spearman the trainer wrote for the same test file."""
    train_csv = _ratings_csv(tmp_path / "train.csv", sentiment_rows(60, seed=0), 0)
    test_csv = _ratings_csv(tmp_path / "test.csv", sentiment_rows(16, seed=5), 1)
    out = tmp_path / "rating"
    code = cli.main(["train", "--name", "rating", "--task-type", "regression", "--data", str(train_csv),
                     "--target-columns", "rating,length", "--test-data", str(test_csv),
                     "--backbone", specs["text"].source, "--backbone-name", "text", "--out", str(out),
                     "--quiet", "--no-cache", "--register", srv.url, "--token", srv.admin])
    assert code == 0, capsys.readouterr().err
    trained = json.loads((out / "metrics.json").read_text())["metrics"]["test"]
    capsys.readouterr()

    folder_json, served_json = tmp_path / "folder.json", tmp_path / "served.json"
    assert cli.main(["evaluate", str(out), "--data", str(test_csv), "--json", str(folder_json), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "R² " in printed and "rating" in printed and "length" in printed, printed
    assert cli.main(["evaluate", "--url", srv.url, "--task", "rating", "--data", str(test_csv),
                     "--json", str(served_json), "--quiet"]) == 0, capsys.readouterr().err
    for path in (folder_json, served_json):
        got = json.loads(path.read_text())
        assert got["task"] == "rating" and got["n"] == 16
        for key in ("mae", "rmse", "r2", "spearman", "loss"):
            assert got[key] == pytest.approx(trained[key], rel=1e-4, abs=1e-4), (path.name, key)
        for name in ("rating", "length"):
            assert got["per_output"][name]["r2"] == pytest.approx(trained["per_output"][name]["r2"], abs=1e-4)
        assert f"{got['r2']:.4f}" == _card_cells(out, "test")["R²"]  # the card's headline too
    assert trained["per_output"]["rating"]["r2"] > 0  # better than the mean: equal numbers mean something

    # data that lacks an output the task answers: a clear error, exit 2
    bad = tmp_path / "bad.csv"
    bad.write_text("text,score\ngood,1\nbad,2\n")
    assert cli.main(["evaluate", str(out), "--data", str(bad), "--quiet"]) == 2
    assert "rating" in capsys.readouterr().err


def test_lora_adapter_registered_over_http_serves_the_trainer_scores(srv, specs, tmp_path):
    from adapters.backbones.base import load_backbone
    data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(48))).load()
    r = train(data, load_backbone(specs["text"]), TrainConfig(name="reviews-lora", method="lora", epochs=2,
                                                            lr=2e-2, batch_size=16, progress=False),
              tmp_path / "lora", cache_dir=None)
    answer = register_with_server(r.path, srv.url, srv.admin)
    assert answer["kind"] == "lora" and answer["name"] == "reviews-lora"
    val = r.splits["validation"]
    served = _scores(srv.predict("reviews-lora", texts=val.inputs), data.label_names)
    assert torch.allclose(served, r.probs["validation"], atol=1e-5)
    with pytest.raises(RegistrationFailed) as err:  # the same adapter under a name the server refuses
        register_with_server(r.path, srv.url, srv.admin, name="Not A Name")
    assert err.value.status in (400, 422)


def _card_cells(out, split: str) -> dict[str, str]:
    """The model card's metrics row of ``split``, by column (as the card prints them)."""
    lines = (out / "README.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| split |"))
    names = [c.strip() for c in lines[header].strip("|").split("|")]
    row = next(line for line in lines[header + 2:] if line.startswith(f"| {split} |"))
    return dict(zip(names, (c.strip() for c in row.strip("|").split("|"))))


def test_classifier_evaluated_from_folder_and_server_with_the_trainers_numbers(srv, specs, tmp_path, capsys):
    """``taskswap evaluate`` (folder, and ``--url``) prints the accuracy and macro-F1 the trainer
    wrote to metrics.json and the card for the same test file."""
    train_csv = write_text_csv(tmp_path / "train.csv", sentiment_rows(60, seed=0))
    test_csv = write_text_csv(tmp_path / "test.csv", sentiment_rows(20, seed=7))
    out = tmp_path / "cls"
    assert cli.main(["train", "--name", "cls", "--data", str(train_csv), "--test-data", str(test_csv),
                     "--backbone", specs["text"].source, "--backbone-name", "text", "--out", str(out),
                     "--quiet", "--no-cache", "--register", srv.url, "--token", srv.admin]) == 0
    trained = json.loads((out / "metrics.json").read_text())["metrics"]["test"]
    card = _card_cells(out, "test")
    capsys.readouterr()
    for where, args in (("folder", [str(out)]), ("served", ["--url", srv.url, "--task", "cls"])):
        path = tmp_path / f"{where}.json"
        assert cli.main(["evaluate", *args, "--data", str(test_csv), "--json", str(path), "--quiet"]) == 0, \
            capsys.readouterr().err
        got = json.loads(path.read_text())
        assert got["n"] == trained["n"] == 20
        for key in ("accuracy", "macro_f1", "loss"):
            assert got[key] == pytest.approx(trained[key], abs=1e-5), (where, key)
        assert f"{got['accuracy']:.4f}" == card["accuracy"] and f"{got['macro_f1']:.4f}" == card["macro-F1"]


def test_tagger_evaluated_from_folder_and_server_with_the_trainers_numbers(srv, specs, tmp_path, capsys):
    """A token task: ``taskswap evaluate`` on the folder and through ``--url`` scores the test
    file with the token accuracy and entity F1 the trainer wrote (metrics.json and the card)."""
    rng = np.random.default_rng(0)
    vocab = {"good": "B-PER", "great": "B-PER", "film": "I-PER", "movie": "I-PER"}
    others = ["the", "a", "is", "fun", "bad", "plot", "was", "long"]

    def sentences(n):
        rows = []
        for _ in range(n):
            words = list(rng.choice(others, 2)) + list(rng.choice(["good", "great"], 1)) \
                + list(rng.choice(["film", "movie"], 1)) + list(rng.choice(others, 2))
            rows.append({"tokens": words, "tags": [vocab.get(w, "O") for w in words]})
        return rows
    for name, n in (("train", 40), ("test", 12)):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in sentences(n)) + "\n")
    out = tmp_path / "tagger"
    assert cli.main(["train", "--name", "tagger", "--task-type", "token_classification",
                     "--data", str(tmp_path / "train.jsonl"), "--test-data", str(tmp_path / "test.jsonl"),
                     "--backbone", specs["text"].source, "--backbone-name", "text", "--max-length",
                     str(specs["text"].max_length), "--epochs", "30", "--out", str(out), "--quiet",
                     "--register", srv.url, "--token", srv.admin]) == 0, capsys.readouterr().err
    trained = json.loads((out / "metrics.json").read_text())["metrics"]["test"]
    card = _card_cells(out, "test")
    capsys.readouterr()
    for where, args in (("folder", [str(out)]), ("served", ["--url", srv.url, "--task", "tagger"])):
        path = tmp_path / f"{where}.json"
        assert cli.main(["evaluate", *args, "--data", str(tmp_path / "test.jsonl"), "--json", str(path),
                         "--quiet"]) == 0, capsys.readouterr().err
        got = json.loads(path.read_text())
        assert got["n"] == trained["n"] == 72 and got["unmatched_words"] == 0
        for key in ("accuracy", "f1", "precision", "recall"):
            assert got[key] == pytest.approx(trained[key], abs=1e-6), (where, key)
        assert got["confusion"] == trained["confusion"]
        assert f"{got['accuracy']:.4f}" == card["token accuracy"] and f"{got['f1']:.4f}" == card["entity F1"]
    assert trained["accuracy"] > 0.6  # it learned something: equal numbers mean something
