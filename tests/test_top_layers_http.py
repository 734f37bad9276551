"""A ``top_layers`` adapter registered over real HTTP serves its fine-tuned model's scores,
in one request with a head on the same backbone."""

from __future__ import annotations

import pytest
import torch

from factories import head_adapter
from http_helpers import TEXTS, expected_head_scores, predict_ok, register_ok, scores_of
from server import server, server_factory  # noqa: F401  (pytest fixtures)
from top_layers_helpers import reference_probs, top_layers_adapter

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
