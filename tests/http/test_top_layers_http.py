"""A ``top_layers`` adapter registered over real HTTP serves its fine-tuned model's scores,
in one request with a head on the same backbone."""

from __future__ import annotations

import pytest
import torch

from support.factories import head_adapter
from support.http_helpers import TEXTS, expected_head_scores, predict_ok, register_ok, scores_of
from support.server import server, server_factory  # noqa: F401  (pytest fixtures)
from support.top_layers_helpers import reference_probs, top_layers_adapter

pytestmark = pytest.mark.server


def test_register_top_layers_and_predict_with_a_head(server, tmp_path, text_backbone):
    top = top_layers_adapter(tmp_path / "t", text_backbone, "top-sentiment", k=1, seed=31)
    reg = register_ok(server, top, "tar.gz")
    assert reg["kind"] == "top_layers" and reg["labels"] == ["neg", "pos"]
    head = head_adapter(tmp_path / "h", text_backbone, "top-neighbour", seed=32)
    register_ok(server, head)
    body = predict_ok(server, ["top-sentiment", "top-neighbour"], texts=TEXTS)
    res_top, res_head = body["results"]
    assert res_top["kind"] == "top_layers" and res_top["version"] == reg["version"]
    torch.testing.assert_close(scores_of(res_top), reference_probs(text_backbone, 1, 31, top, TEXTS),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(scores_of(res_head), expected_head_scores(head, text_backbone, TEXTS),
                               atol=1e-5, rtol=0)


def test_cli_train_top_layers_register_and_serve_the_trainer_scores(server, tmp_path, text_backbone, capsys):
    """``taskswap train --method top_layers --layers 2 --register URL``: served scores are the
    trained model's (the trainer's own validation outputs, recomputed here from its files)."""
    from training import cli
    from support.training_helpers import sentiment_rows, write_text_csv
    train_csv = write_text_csv(tmp_path / "train.csv", sentiment_rows(48, seed=0))
    test_rows = sentiment_rows(12, seed=3)
    test_csv = write_text_csv(tmp_path / "test.csv", test_rows)
    out = tmp_path / "adapter"
    code = cli.main(["train", "--name", "reviews-top", "--method", "top_layers", "--layers", "2",
                     "--data", str(train_csv), "--test-data", str(test_csv),
                     "--backbone", text_backbone.spec.source, "--backbone-name", "text",
                     "--epochs", "2", "--lr", "5e-3", "--head-lr", "1e-2", "--batch-size", "16",
                     "--out", str(out), "--quiet", "--no-cache", "--register", server.url,
                     "--token", server.admin])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "registered reviews-top version " in printed.out and "(top_layers)" in printed.out
    texts = [t for t, _ in test_rows]
    (res,) = predict_ok(server, "reviews-top", texts=texts)["results"]
    assert res["kind"] == "top_layers"
    # The trained model itself: a fresh AutoModel with the saved blocks, pooled, the saved head.
    import json

    from adapters.backbones.base import Features
    from adapters.format.safetensors_io import load_tensors
    from adapters.plugin_checks import read_adapter_dir
    from adapters.heads import build_head
    from transformers import AutoModel
    m = read_adapter_dir(out).manifest
    model = AutoModel.from_pretrained(text_backbone.source_path).eval()
    model.load_state_dict(load_tensors(out / "top_layers.safetensors"), strict=False)
    head = build_head(m.head, 2, load_tensors(out / "head.safetensors"))
    batch = text_backbone.preprocess(texts)
    with torch.no_grad():
        ref = torch.softmax(head(Features(model(**batch), batch["attention_mask"]).get(m.head.pooling)), -1)
    torch.testing.assert_close(scores_of(res), ref, atol=1e-5, rtol=0)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["test"]
    truth = torch.tensor([m.labels.index(y) for _, y in test_rows])
    assert float((ref.argmax(1) == truth).float().mean()) == pytest.approx(metrics["accuracy"])
