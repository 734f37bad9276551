"""``--init-from``: a head warm-started from another task's head adapter (shared labels keep
their rows, new labels start fresh), checked against the new run before any fitting."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from adapters.errors import InvalidInput
from adapters.format import HeadSpec
from adapters.heads import Head
from adapters.registry import Registry
from adapters.store import open_store
from support.training_helpers import sentiment_rows
from training.config import TrainConfig
from training.data import LabelledData
from training.head_fit import fold_standardisation
from training.init_from import WarmStart, unfold_into
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("hidden", [(), (4,)])
def test_unfold_is_the_inverse_of_the_fold(hidden):
    torch.manual_seed(0)
    spec = HeadSpec(pooling="mean", input_dim=5, hidden=list(hidden))
    raw = Head(spec, 3)
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    fresh = Head(spec, 3)
    unfold_into(fresh, WarmStart(raw, ["a", "b", "c"], ["a", "b", "c"], "t", "v"), mean, std)
    x = torch.randn(7, 5)
    assert torch.allclose(fresh((x - mean) / std), raw(x), atol=1e-5)
    fold_standardisation(fresh, mean, std)
    assert torch.allclose(fresh(x), raw(x), atol=1e-5)


def test_new_labels_keep_the_fresh_rows_and_shared_ones_move():
    spec = HeadSpec(pooling="mean", input_dim=3)
    raw, fresh = Head(spec, 2), Head(spec, 3)
    before = fresh.linear_layers()[0].weight.clone()
    unfold_into(fresh, WarmStart(raw, ["neg", "pos"], ["pos", "meh", "neg"], "t", "v"), torch.zeros(3), torch.ones(3))
    w = fresh.linear_layers()[0].weight
    assert torch.equal(w[0], raw.linear_layers()[0].weight[1]) and torch.equal(w[2], raw.linear_layers()[0].weight[0])
    assert torch.equal(w[1], before[1])


def _data(rows, names):
    return LabelledData("text", [t for t, _ in rows], [names.index(y) for _, y in rows], names, "toy")


@pytest.fixture(scope="module")
def source(tmp_path_factory, text_backbone):
    out = tmp_path_factory.mktemp("src") / "sentiment"
    train(_data(sentiment_rows(60, seed=1), ["neg", "pos"]), text_backbone,
          TrainConfig(name="sentiment", epochs=60, lr=0.01, progress=False), out, cache_dir=None)
    return out


def test_a_warm_start_begins_at_the_source_head(source, text_backbone, tmp_path):
    rows = sentiment_rows(40, seed=2) + [("the film was the story", "meh")] * 10
    names = ["meh", "neg", "pos"]
    r = train(_data(rows, names), text_backbone,
              TrainConfig(name="reviews3", epochs=1, lr=1e-9, init_from=str(source), progress=False),
              tmp_path / "warm", cache_dir=None)
    rec = r.manifest.training["init_from"]
    assert rec["task"] == "sentiment" and rec["shared_labels"] == ["neg", "pos"] and rec["new_labels"] == ["meh"]
    src, new = load_file(str(source / "head.safetensors")), load_file(str(tmp_path / "warm" / "head.safetensors"))
    # lr ~ 0: the shared rows are the source's (unfolded with this run's statistics, folded back)
    assert torch.allclose(new["layers.0.weight"][1:], src["layers.0.weight"], atol=1e-4)
    assert torch.allclose(new["layers.0.bias"][1:], src["layers.0.bias"], atol=1e-4)
    assert not torch.allclose(new["layers.0.weight"][0], src["layers.0.weight"][0], atol=1e-2)


def test_init_from_refuses_another_head_shape_and_other_methods(source, text_backbone, tmp_path):
    data = _data(sentiment_rows(20, seed=3), ["neg", "pos"])
    with pytest.raises(InvalidInput, match="head hidden is"):
        train(data, text_backbone, TrainConfig(name="x", hidden=[8], init_from=str(source), progress=False),
              tmp_path / "x", cache_dir=None)
    with pytest.raises(ValidationError, match="warm-starts the 'head' method only"):
        TrainConfig(name="x", method="lora", init_from=str(source))


def test_cli_init_from_a_stored_task_version(source, text_backbone, tmp_path, capsys):
    from support.training_helpers import write_text_csv
    from training import cli
    version = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone}).register(source).version
    csv = write_text_csv(tmp_path / "d.csv", sentiment_rows(30, seed=4))
    args = ["train", "--name", "reviews", "--data", str(csv), "--backbone", str(text_backbone.spec.source),
            "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store"), "--quiet", "--no-cache",
            "--epochs", "5"]
    assert cli.main([*args, "--init-from", f"sentiment@{version[:12]}"]) == 0
    manifest = json.loads((tmp_path / "out" / "adapter.json").read_text())
    assert manifest["training"]["init_from"]["version"] == version
    assert cli.main([*args, "--init-from", "nosuch"]) == 2
    assert "not registered in the store" in capsys.readouterr().err
