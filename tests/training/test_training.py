"""The training module end to end on tiny random backbones: every data source and method,
servability through the real registry/runtime, reproducibility, caching, model cards."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from adapters.backbones.tiny import tiny_backbone_spec
from adapters.errors import InvalidAdapter, InvalidInput
from adapters.format import HeadSpec
from adapters.heads import Head
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from training import features as features_mod
from training.card import HEADINGS
from training.config import TrainConfig
from training.data import LabelledData, open_image
from training.head_fit import (STD_FLOOR, EarlyStopping, HeadFitConfig, fit_head, fold_standardisation,
                            standardiser)
from training.sources import DataSource
from training.trainer import train
from support.training_helpers import (sentiment_rows, write_image_csv, write_image_folder, write_text_csv,
                              write_text_jsonl)


def _cfg(name, method="head", **kw):
    base = {"progress": False}
    if method == "head":
        base.update(epochs=150, lr=0.01)
    else:
        base.update(epochs=2, lr=5e-3, batch_size=16)
    return TrainConfig(name=name, method=method, **{**base, **kw})


def served_probs(registry: Registry, task: str, data: LabelledData) -> torch.Tensor:
    """``[n, k]`` probabilities from the server's runtime for ``data`` (adapter label order)."""
    rt = Runtime(registry)
    inputs = data.inputs if data.modality == "text" else [open_image(x) for x in data.inputs]
    res = rt.run([rt.prepare([task], inputs, data.modality)])[0][0]
    return torch.tensor([[row.scores[lab] for lab in data.label_names] for row in res.rows])


@pytest.fixture(scope="module")
def text_backbone(tmp_path_factory):
    """The tiny text backbone (word tokenizer: the sentiment words are in its vocabulary)."""
    from adapters.backbones.base import load_backbone
    return load_backbone(tiny_backbone_spec("text", tmp_path_factory.mktemp("words") / "text"))


@pytest.fixture(scope="module")
def vision_backbone(tmp_path_factory):
    """The tiny vision backbone (He-initialised: features differ per image)."""
    from adapters.backbones.base import load_backbone
    return load_backbone(tiny_backbone_spec("vision", tmp_path_factory.mktemp("live") / "vision"))


@pytest.fixture
def reg(tmp_path, text_backbone, vision_backbone):
    r = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone, "vision": vision_backbone})
    r.sync()
    return r


# ---- every data source, head method, served scores equal the trainer's -----------------
@pytest.mark.parametrize("source", ["csv", "jsonl", "image-folder", "image-csv"])
def test_head_from_each_source_is_servable_with_the_reported_scores(source, tmp_path, reg, text_backbone,
                                                                     vision_backbone):
    if source in ("csv", "jsonl"):
        writer = write_text_csv if source == "csv" else write_text_jsonl
        path = writer(tmp_path / f"reviews.{source}", sentiment_rows(60), "body", "sentiment")
        data = DataSource(path=path, text_column="body", label_column="sentiment").load()
        backbone = text_backbone
    else:
        path = (write_image_folder(tmp_path / "imgs", per_class=20) if source == "image-folder"
                else write_image_csv(tmp_path / "csvimgs", per_class=20))
        data = DataSource(path=path).load()
        backbone = vision_backbone
    result = train(data, backbone, _cfg("toy"), tmp_path / "out", cache_dir=tmp_path / "cache")

    # The label set was inferred and a stratified validation split carved off.
    assert result.manifest.labels == data.label_names
    per_class = data.class_counts().values()
    assert len(result.splits["validation"]) == sum(c - round(0.8 * c) for c in per_class)
    assert set(result.splits["validation"].labels) == set(range(len(data.label_names)))
    # The toy labels are in the words / colours: a working head learns them.
    assert result.metrics["validation"].accuracy >= 0.9, result.metrics["validation"]

    loaded = reg.register(result.path)
    assert loaded.kind == "head" and loaded.labels == data.label_names
    served = served_probs(reg, "toy", result.splits["validation"])
    assert torch.allclose(served, result.probs["validation"], atol=1e-5)


def test_manifest_records_backbone_preprocessing_metrics_and_training(tmp_path, text_backbone):
    data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(40))).load()
    r = train(data, text_backbone, _cfg("toy", hidden=[16]), tmp_path / "out", cache_dir=None)
    m = json.loads((r.path / "adapter.json").read_text())
    assert m["backbone"] == {"name": "text", "fingerprint": text_backbone.fingerprint,
                             "source": text_backbone.spec.source}
    assert m["preprocessing"] == {"max_length": 32}
    assert m["head"]["hidden"] == [16] and m["head"]["input_dim"] == 32
    assert m["metrics"]["val_accuracy"] == round(r.metrics["validation"].accuracy, 6)
    assert {"val_macro_f1", "val_loss", "train_accuracy"} <= set(m["metrics"])
    assert m["training"]["method"] == "head"
    assert m["training"]["hyperparameters"]["hidden"] == [16]
    assert m["training"]["examples"] == {"train": 32, "validation": 8}
    metrics = json.loads((r.path / "metrics.json").read_text())
    assert len(metrics["history"]["val_loss"]) == m["training"]["epochs_run"]


# ---- LoRA ------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", ["text", "image"])
def test_lora_adapter_is_peft_format_and_served_per_row_with_the_reported_scores(
        modality, tmp_path, reg, text_backbone, vision_backbone):
    if modality == "text":
        data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(48))).load()
        # Every Linear of the encoder blocks (attention and feed-forward), not the pooler.
        backbone, want_targets = text_backbone, ["attention.output.dense", "attention.self.key",
                                                 "attention.self.query", "attention.self.value",
                                                 "intermediate.dense", "output.dense"]
    else:
        data = DataSource(path=write_image_folder(tmp_path / "imgs", per_class=10)).load()
        backbone, want_targets = vision_backbone, None
    # High learning rates so LoRA and the fresh head move within three epochs on toy data.
    lr = 2e-2 if modality == "text" else 5e-3
    r = train(data, backbone, _cfg("toy-lora", "lora", lr=lr, head_lr=lr, epochs=3), tmp_path / "out",
              cache_dir=None)
    files = {p.name for p in r.path.iterdir()}
    assert {"adapter.json", "adapter_config.json", "adapter_model.safetensors", "head.safetensors",
            "README.md", "loss_curves.png", "confusion_matrix.png"} <= files
    peft_cfg = json.loads((r.path / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == 8
    if want_targets:
        assert sorted(peft_cfg["target_modules"]) == want_targets
    tensors = load_file(str(r.path / "adapter_model.safetensors"))
    if not want_targets:  # MobileNet: every 1x1 stride-1 convolution, nothing else
        modules = dict(backbone.model.named_modules())
        adapted = {k.removeprefix("base_model.model.").split(".lora_")[0] for k in tensors if ".lora_" in k}
        one_by_one = {n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)
                      and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1}
        assert adapted == one_by_one and len(adapted) > 10
    assert all(k.startswith("base_model.model.") for k in tensors)
    if want_targets:
        assert not any("pooler" in k for k in tensors)
    assert r.history.best_epoch >= 1, "LoRA never improved on its start: the test would be vacuous"
    assert any(float(v.abs().max()) > 0 for k, v in tensors.items() if "lora_B" in k)

    loaded = reg.register(r.path)
    assert loaded.kind == "lora" and len(loaded.lora.modules) > 0
    val = r.splits["validation"]
    served = served_probs(reg, "toy-lora", val)
    assert torch.allclose(served, r.probs["validation"], atol=1e-5)
    # ...and the LoRA deltas matter: the same head on the frozen trunk scores differently.
    inputs = val.inputs if modality == "text" else [open_image(x) for x in val.inputs]
    frozen = torch.softmax(loaded.head(backbone.embed(inputs, loaded.head.spec.pooling)), -1)
    assert not torch.allclose(frozen, served, atol=1e-4)


def test_select_last_constant_lr_and_no_clipping_are_honoured(tmp_path, text_backbone, monkeypatch):
    import training.finetune as finetune

    def refuse(*a, **k):
        raise AssertionError("not asked for")
    monkeypatch.setattr(finetune, "_Schedule", refuse)  # schedule="constant": no warm-up / decay plan
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", refuse)  # clip_norm=None: no clipping
    data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(24))).load()
    r = train(data, text_backbone, _cfg("toy-last", "lora", epochs=2, select="last", schedule="constant",
                                        clip_norm=None), tmp_path / "out", cache_dir=None)
    assert r.history.best_epoch == len(r.history.train_loss) == 2  # the end of the schedule is kept
    hyper = json.loads((r.path / "adapter.json").read_text())["training"]["hyperparameters"]
    assert (hyper["select"], hyper["schedule"], hyper["clip_norm"]) == ("last", "constant", None)


def test_normal_head_init_reads_raw_features_and_serves_the_reported_scores(tmp_path, reg, text_backbone,
                                                                           monkeypatch):
    import training.features as features
    from training.finetune import fresh_head

    monkeypatch.setattr(features, "extract_features", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("head_init='normal' needs no frozen pass")))
    data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(24))).load()
    spec = HeadSpec(pooling="mean", input_dim=text_backbone.hidden_size)
    torch.manual_seed(0)
    head = fresh_head(text_backbone, spec, 2, data, 8, init="normal")
    w = head.linear_layers()[-1]
    assert float(head.mean.abs().max()) == 0 and float(head.std.min()) == float(head.std.max()) == 1
    assert abs(float(w.weight.detach().std()) - 0.02) < 0.01 and float(w.bias.detach().abs().max()) == 0
    r = train(data, text_backbone, _cfg("toy-normal", "lora", epochs=2, lr=2e-2, head_lr=2e-2,
                                        head_init="normal"), tmp_path / "out", cache_dir=None)
    hyper = json.loads((r.path / "adapter.json").read_text())["training"]["hyperparameters"]
    assert hyper["head_init"] == "normal"
    reg.register(r.path)
    assert torch.allclose(served_probs(reg, "toy-normal", r.splits["validation"]), r.probs["validation"],
                          atol=1e-5)


def test_lora_warm_start_head_uses_the_head_methods_own_defaults():
    from training.lora import warm_start_config
    cfg = TrainConfig(name="x", method="lora", epochs=1, lr=0.5, hidden=[8], seed=3)
    warm = warm_start_config(cfg)
    assert (warm.method, warm.epochs, warm.lr, warm.patience) == ("head", 200, 1e-3, 10)
    assert (warm.hidden, warm.seed) == ([8], 3)


def test_lora_refuses_targets_the_server_cannot_apply(tmp_path, vision_backbone):
    data = DataSource(path=write_image_folder(tmp_path / "imgs", per_class=4)).load()
    # conv_3x3 of a MobileNet block is a depthwise 3x3 conv: not servable per row.
    cfg = _cfg("bad-lora", "lora", lora_targets=["layer.0.conv_3x3.convolution"])
    with pytest.raises(InvalidInput, match="cannot apply per row"):
        train(data, vision_backbone, cfg, tmp_path / "out", cache_dir=None)
    with pytest.raises(InvalidInput, match="match no module"):
        train(data, vision_backbone, _cfg("bad-lora", "lora", lora_targets=["nope"]), tmp_path / "o2",
              cache_dir=None)


# ---- scratch baseline ------------------------------------------------------------------
def test_scratch_baseline_writes_a_report_that_is_not_an_adapter(tmp_path, text_backbone, reg):
    data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(40))).load()
    r = train(data, text_backbone, _cfg("toy-scratch", "scratch", epochs=3), tmp_path / "out",
              cache_dir=None)
    assert not r.servable and r.manifest is None
    files = {p.name for p in r.path.iterdir()}
    assert files == {"README.md", "metrics.json", "loss_curves.png", "confusion_matrix.png"}
    card = (r.path / "README.md").read_text()
    assert "not servable" in card
    metrics = json.loads((r.path / "metrics.json").read_text())
    assert metrics["training"]["trained_parameters"] > sum(p.numel() for p in text_backbone.model.parameters())
    assert len(metrics["history"]["train_loss"]) >= 1
    with pytest.raises(InvalidAdapter):
        reg.register(r.path)


# ---- reproducibility -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["head", "lora"])
def test_same_seed_gives_byte_identical_weights_other_seed_differs(method, tmp_path, text_backbone):
    data = DataSource(path=write_text_csv(tmp_path / "r.csv", sentiment_rows(40))).load()
    weights = "head.safetensors"

    def run(seed, tag):
        # Separate feature caches: the second run recomputes features from scratch too.
        r = train(data, text_backbone, _cfg("toy", method, seed=seed), tmp_path / tag,
                  cache_dir=tmp_path / f"cache-{tag}")
        files = [weights] + (["adapter_model.safetensors"] if method == "lora" else [])
        return [(r.path / f).read_bytes() for f in files]

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert a == b
    assert a[0] != c[0]


# ---- feature cache ---------------------------------------------------------------------
def test_feature_cache_hits_on_same_inputs_and_misses_on_any_change(tmp_path, text_backbone, monkeypatch):
    calls = []
    real = features_mod.compute_features
    monkeypatch.setattr(features_mod, "compute_features",
                        lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    texts = ["good film", "bad film", "the plot"]
    cache = tmp_path / "cache"
    x1 = features_mod.extract_features(text_backbone, texts, "mean", cache, progress=False)
    x2 = features_mod.extract_features(text_backbone, texts, "mean", cache, progress=False)
    assert calls == [3] and torch.equal(x1, x2)
    features_mod.extract_features(text_backbone, texts[:2] + ["the film"], "mean", cache, progress=False)
    features_mod.extract_features(text_backbone, texts, "cls", cache, progress=False)
    assert calls == [3, 3, 3]
    assert len(list(cache.glob("*.safetensors"))) == 3
    # A file edited in place is a new input: image files are hashed by content.
    p = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(p)
    k1 = features_mod.inputs_digest([p])
    Image.new("RGB", (8, 8), (0, 0, 255)).save(p)
    assert features_mod.inputs_digest([p]) != k1


# ---- head fitting details --------------------------------------------------------------
def test_folded_standardisation_equals_standardise_then_head():
    torch.manual_seed(0)
    x = torch.randn(20, 6) * 50 + 7
    mean, std = x.mean(0), x.std(0, unbiased=False)
    head = Head(HeadSpec(pooling="mean", input_dim=6, hidden=[4]), 3)
    expected = head((x - mean) / std)
    fold_standardisation(head, mean, std)
    assert torch.allclose(head(x), expected, atol=1e-4)


def test_standardiser_floors_nearly_constant_dimensions():
    # One dimension barely moves (std 1e-4 vs ~1): unfloored, the folded head would weight
    # it ~1e4 times the others, and any feature change there (LoRA) would swamp the logits.
    torch.manual_seed(0)
    x = torch.randn(200, 8)
    x[:, 3] = 5 + 1e-4 * torch.randn(200)
    x[:, 5] = 2.0  # exactly constant: std 1, as before
    mean, std = standardiser(x)
    own = x.std(0, unbiased=False)
    assert torch.allclose(mean, x.mean(0))
    assert float(std[3]) == pytest.approx(STD_FLOOR * float(torch.cat([own[:5], own[6:], torch.ones(1)]).median()), rel=1e-5)
    assert float(std[5]) == 1.0
    assert torch.equal(std[[0, 1, 2, 4, 6, 7]], own[[0, 1, 2, 4, 6, 7]])


def test_early_stopping_keeps_the_best_epoch_when_validation_loss_rises():
    torch.manual_seed(0)
    # Random labels: the head can only memorise, so validation loss rises after a few epochs.
    x, y = torch.randn(64, 16), torch.randint(0, 2, (64,))
    vx, vy = torch.randn(64, 16), torch.randint(0, 2, (64,))
    fit = fit_head(HeadSpec(pooling="mean", input_dim=16, hidden=[64]), 2, x, y, vx, vy,
                   HeadFitConfig(epochs=300, lr=0.01, patience=5), progress=False)
    h = fit.history
    assert h.stopped_early and len(h.val_loss) < 300
    assert len(h.val_loss) == h.best_epoch + 5
    assert h.val_loss[h.best_epoch - 1] == min(h.val_loss)
    stop = EarlyStopping(patience=2)
    assert [stop.step(e, v, {}) for e, v in enumerate([1.0, 0.9, 0.95, 0.97])] == [False, False, False, True]
    assert stop.best_epoch == 1


# ---- model card ------------------------------------------------------------------------
def test_model_card_has_the_expected_structure(tmp_path, vision_backbone):
    data = DataSource(path=write_image_folder(tmp_path / "imgs")).load()
    test = DataSource(path=write_image_folder(tmp_path / "test", per_class=4, seed=1)).load()
    r = train(data, vision_backbone, _cfg("colours"), tmp_path / "out", test=test, cache_dir=None)
    card = (r.path / "README.md").read_text()
    lines = card.splitlines()
    assert lines[0] == "# colours"
    positions = [lines.index(h) for h in HEADINGS]
    assert positions == sorted(positions), "sections out of order"
    metrics_at = lines.index("## Metrics")
    assert lines[metrics_at + 2] == "| split | examples | accuracy | macro-F1 | loss |"
    rows = [l for l in lines[metrics_at + 4:metrics_at + 8] if l.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows] == ["train", "validation", "test"]
    test_row = rows[2].split("|")
    assert int(test_row[2]) == 12 and float(test_row[3]) == pytest.approx(r.metrics["test"].accuracy, abs=1e-4)
    report_at = lines.index("## Per-class report")
    assert "On the test split." in lines[report_at + 2]
    for colour in ("blue", "green", "red"):
        assert any(l.startswith(f"| {colour} | ") for l in lines[report_at:])
    assert "| lr | 0.01 |" in card and "| seed | 0 |" in card
    for png in ("loss_curves.png", "confusion_matrix.png"):
        assert f"]({png})" in card
        with Image.open(r.path / png) as im:
            assert im.format == "PNG" and im.size[0] > 100


# ---- data checks before training -------------------------------------------------------
def test_data_problems_are_reported_before_any_backbone_work(tmp_path, text_backbone, monkeypatch):
    monkeypatch.setattr(features_mod, "compute_features", lambda *a, **k: pytest.fail("features computed"))
    one_class = LabelledData("text", ["good", "fine", "nice", "great"], [0] * 4, ["pos", "neg"], "toy")
    with pytest.raises(InvalidInput, match="at least 2"):
        train(one_class, text_backbone, _cfg("x"), tmp_path / "o1")
    images = LabelledData("image", [Image.new("RGB", (4, 4))] * 4, [0, 1, 0, 1], ["a", "b"], "toy")
    with pytest.raises(InvalidInput, match="backbone takes text"):
        train(images, text_backbone, _cfg("x"), tmp_path / "o2")
    ok = LabelledData("text", ["good", "bad"] * 4, [0, 1] * 4, ["pos", "neg"], "toy")
    other = LabelledData("text", ["good", "bad"], [0, 1], ["neg", "pos"], "toy")
    with pytest.raises(InvalidInput, match="differ from training labels"):
        train(ok, text_backbone, _cfg("x"), tmp_path / "o3", val=other)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_output_folder_with_foreign_files_is_refused(tmp_path, text_backbone):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("mine")
    data = LabelledData("text", ["good", "bad"] * 4, [0, 1] * 4, ["pos", "neg"], "toy")
    with pytest.raises(InvalidInput, match="holds other files"):
        train(data, text_backbone, _cfg("x"), out)
    assert (out / "thesis.docx").read_text() == "mine"
