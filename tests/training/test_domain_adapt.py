"""Domain adaptation (training.domain, training.adapt): CORAL folded into the head exactly,
source statistics recorded at training time, the adapted version's manifest, card and checks,
scored through the real registry and runtime on a tiny backbone."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.errors import InvalidInput
from adapters.format import HeadSpec, content_hash
from adapters.heads import Head
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.factories import peft_lora_dir
from support.training_helpers import sentiment_rows
from training.adapt import adapt, load_head
from training.config import TrainConfig
from training.data import LabelledData
from training.data.unlabelled import load_unlabelled
from training.domain import STATS_FILE, AdaptConfig, FeatureStats, adaptation_method
from training.domain.coral import coral_map, fold_affine
from training.feature_stats import first_layer_inputs
from training.features import extract_features, inputs_digest
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stats(rows, dim, scale, shift, seed):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) * scale
    return FeatureStats.of(torch.randn(rows, dim, generator=g) @ mix + shift)


@pytest.mark.parametrize("hidden,normalize", [((), False), ((8,), False), ((), True), ((6,), True)])
def test_folded_head_on_target_equals_head_on_coral_features(hidden, normalize):
    torch.manual_seed(0)
    head = Head(HeadSpec(pooling="mean", input_dim=5, hidden=list(hidden), normalize=normalize), 3).eval()
    x = torch.randn(64, 5) * 2.5 + 0.7  # target features
    seen = first_layer_inputs(x, normalize)
    a, c = coral_map(_stats(300, 5, 1.0, 0.0, 1), FeatureStats.of(seen), shrinkage=0.1)
    folded = fold_affine(head, a, c)
    # head(CORAL(features)): the map applied to what the first layer reads, then the rest of the net
    z = (seen.double() @ a.T + c).float()
    expected = head.net(z)
    assert torch.allclose(folded(x), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(folded(x), head(x), atol=1e-3)  # the fold changed something


def test_coral_map_gives_target_the_source_mean_and_covariance():
    source, target = _stats(4000, 4, 1.0, 0.0, 2), _stats(4000, 4, 3.0, 5.0, 3)
    a, c = coral_map(source, target, shrinkage=0.0)
    # exact in the population statistics: A C_t A^T = C_s and A mu_t + c = mu_s
    assert torch.allclose(a @ target.cov @ a.T, source.cov, atol=1e-8)
    assert torch.allclose(a @ target.mean + c, source.mean, atol=1e-10)


def test_stats_file_round_trip_and_damage(tmp_path):
    s = _stats(50, 3, 1.0, 1.0, 4)
    s.save(tmp_path)
    back = FeatureStats.load(tmp_path)
    assert back.rows == 50 and torch.allclose(back.cov, s.cov, atol=1e-6)
    assert FeatureStats.load(tmp_path / "missing") is None
    (tmp_path / STATS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(Exception, match="not a readable statistics file"):
        FeatureStats.load(tmp_path)


def _data(rows, source="toy"):
    names = ["neg", "pos"]
    return LabelledData("text", [t for t, _ in rows], [names.index(y) for _, y in rows], names, source)


def _shifted(rows):
    """The target domain: the same sentiment words, with a block of domain words in front."""
    return [("patient dosage tablet side effects " + t, y) for t, y in rows]


@pytest.fixture(scope="module")
def source_adapter(tmp_path_factory, text_backbone):
    out = tmp_path_factory.mktemp("src") / "sentiment"
    train(_data(sentiment_rows(80, seed=1)), text_backbone,
          TrainConfig(name="sentiment", epochs=60, lr=0.01, progress=False), out, cache_dir=None)
    return out


def test_training_records_the_source_statistics(source_adapter, text_backbone, tmp_path):
    stats = FeatureStats.load(source_adapter)
    assert stats is not None and stats.dim == text_backbone.hidden_size
    meta = json.loads((source_adapter / "metrics.json").read_text())
    assert stats.rows == meta["training"]["examples"]["train"]
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone})
    assert reg.register(source_adapter).name == "sentiment"  # the extra file registers


def test_adapt_writes_a_servable_version_that_folds_coral(source_adapter, text_backbone, tmp_path):
    target_rows = _shifted(sentiment_rows(60, seed=7))
    target = [t for t, _ in target_rows]
    r = adapt(source_adapter, target, tmp_path / "adapted", AdaptConfig(progress=False), text_backbone,
              target_labelled=_data(target_rows[:20], "target"), target_description="toy target")
    rec = r.manifest.training["adaptation"]
    assert rec["method"] == "coral" and rec["source_version"] == content_hash(source_adapter)
    assert rec["target_data"] == {"sha256": inputs_digest(target), "inputs": 60, "description": "toy target"}
    assert "recorded in the source adapter" in rec["source_statistics"]
    assert set(r.metrics) == {"adapted", "source"} and "val_accuracy" in r.manifest.metrics
    card = (r.path / "README.md").read_text()
    assert "## Domain adaptation" in card and rec["source_version"][:12] in card
    # served through the real registry and runtime == the source head on CORAL-mapped target features
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone})
    loaded = reg.register(r.path)
    rt = Runtime(reg)
    res = rt.run([rt.prepare([loaded.name], target, "text")])[0][0]
    served = torch.tensor([[row.scores[lab] for lab in ["neg", "pos"]] for row in res.rows])
    m = r.manifest
    feats = first_layer_inputs(extract_features(text_backbone, target, m.head.pooling, None, progress=False),
                               m.head.normalize)
    a, c = coral_map(FeatureStats.load(source_adapter), FeatureStats.of(feats), 0.1)
    source_head = load_head(source_adapter, m)
    want = torch.softmax(source_head.net((feats.double() @ a.T + c).float()), -1)
    assert torch.allclose(served, want, atol=1e-5)
    # the adapted version records the target statistics it now reads
    assert torch.allclose(FeatureStats.load(r.path).mean, feats.double().mean(0), atol=1e-5)


def test_adapt_without_recorded_statistics_needs_source_inputs(source_adapter, text_backbone, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for f in source_adapter.iterdir():
        if f.name != STATS_FILE:
            (old / f.name).write_bytes(f.read_bytes())
    target = [t for t, _ in _shifted(sentiment_rows(40, seed=3))]
    with pytest.raises(InvalidInput, match="--source-data"):
        adapt(old, target, tmp_path / "a1", AdaptConfig(progress=False), text_backbone)
    source = [t for t, _ in sentiment_rows(80, seed=1)]
    r = adapt(old, target, tmp_path / "a2", AdaptConfig(progress=False), text_backbone, source_inputs=source)
    assert "computed from 80 source inputs" in r.manifest.training["adaptation"]["source_statistics"]
    assert r.manifest.metrics == {}


def test_adapt_refuses_bad_sources_and_targets(source_adapter, text_backbone, tmp_path):
    with pytest.raises(InvalidInput, match="at least 20"):
        adapt(source_adapter, ["one text"] * 5, tmp_path / "x", AdaptConfig(progress=False), text_backbone)
    lora = peft_lora_dir(tmp_path / "lora", str(text_backbone.spec.source))
    with pytest.raises(InvalidInput, match="needs a 'head' adapter"):
        adapt(lora, ["a text"] * 30, tmp_path / "y", AdaptConfig(progress=False), text_backbone)
    with pytest.raises(InvalidInput, match="unknown"):
        adaptation_method("dann")
    with pytest.raises(InvalidInput, match="shrinkage"):
        AdaptConfig(shrinkage=-1)


def test_unlabelled_loaders(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\nfirst,pos\n,neg\nsecond,neg\n")
    assert load_unlabelled(tmp_path / "t.csv", "text") == ["first", "second"]
    (tmp_path / "t.jsonl").write_text('{"text": "a"}\n\n{"text": "b", "label": 1}\n')
    assert load_unlabelled(tmp_path / "t.jsonl", "text") == ["a", "b"]
    with pytest.raises(InvalidInput, match="no 'text' column"):
        (tmp_path / "u.csv").write_text("body\nx\n")
        load_unlabelled(tmp_path / "u.csv", "text")
    with pytest.raises(InvalidInput, match="not found"):
        load_unlabelled(tmp_path / "nope", "image")
    (tmp_path / "imgs" / "any").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="no image files"):
        load_unlabelled(tmp_path / "imgs", "image")


def test_cli_adapts_a_registered_task_from_the_store(source_adapter, text_backbone, tmp_path, capsys):
    from training import cli
    store = open_store(str(tmp_path / "store"))
    reg = Registry(store, {"text": text_backbone})
    version = reg.register(source_adapter).version
    target = tmp_path / "target.txt"
    target.write_text("\n".join(t for t, _ in _shifted(sentiment_rows(40, seed=5))))
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in _shifted(sentiment_rows(20, seed=6))))
    code = cli.main(["adapt", "--task", f"sentiment@{version[:10]}", "--store", str(tmp_path / "store"),
                     "--target-data", str(target), "--target-labelled", str(labelled),
                     "--out", str(tmp_path / "out"), "--quiet", "--no-cache"])
    out = capsys.readouterr().out
    assert code == 0 and f"source version {version[:12]}" in out and "adapted version on the labelled" in out
    manifest = json.loads((tmp_path / "out" / "adapter.json").read_text())
    assert manifest["training"]["adaptation"]["source_version"] == version
    assert reg.register(tmp_path / "out").version != version  # a new version of the same task


@pytest.mark.parametrize("extra,message", [
    (["--task", "nosuch"], "not registered in the store"),
    (["--task", "sentiment", "--shrinkage", "-1"], "shrinkage must be between"),
    (["--task", "sentiment", "--method", "dann"], "adaptation method 'dann' is unknown"),
])
def test_cli_bad_input_exits_2_with_the_reason(source_adapter, text_backbone, tmp_path, capsys, extra, message):
    from training import cli
    Registry(open_store(str(tmp_path / "store")), {"text": text_backbone}).register(source_adapter)
    (tmp_path / "t.txt").write_text("a\n" * 30)
    code = cli.main(["adapt", *extra, "--store", str(tmp_path / "store"), "--target-data",
                     str(tmp_path / "t.txt"), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and message in capsys.readouterr().err


def test_pseudo_label_writes_a_lora_version_served_as_trained(source_adapter, text_backbone, tmp_path):
    target_rows = _shifted(sentiment_rows(40, seed=11))
    target = [t for t, _ in target_rows]
    cfg = AdaptConfig(method="pseudo_label", epochs=2, lr=5e-3, batch_size=8, progress=False)
    r = adapt(source_adapter, target, tmp_path / "adapted", cfg, text_backbone,
              target_labelled=_data(target_rows[:20], "target"), target_description="toy target")
    m = r.manifest
    rec = m.training["adaptation"]
    assert m.kind == "lora" and rec["kind"] == "lora" and rec["source_kind"] == "head" and rec["trunk_changed"]
    assert rec["method"] == "pseudo_label" and rec["source_version"] == content_hash(source_adapter)
    assert rec["target_data"] == {"sha256": inputs_digest(target), "inputs": 40, "description": "toy target"}
    assert rec["source_statistics"] == "not used by pseudo_label" and rec["lora_parameters"] > 0
    assert len(rec["pseudo_labels_kept_per_epoch"]) == 2 and 0 < rec["pseudo_labels_kept_per_epoch"][0] <= 40
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"} <= {f.name for f in r.path.iterdir()}
    assert not (r.path / STATS_FILE).exists()  # the frozen trunk's statistics are not what it reads
    card = (r.path / "README.md").read_text()
    assert "## Domain adaptation" in card and "Self-training" in card and rec["source_version"][:12] in card
    # the source head is kept; the trunk moved: the LoRA factors are not all zero
    from safetensors.torch import load_file
    assert torch.equal(load_file(str(r.path / "head.safetensors"))["layers.0.weight"],
                       load_file(str(source_adapter / "head.safetensors"))["layers.0.weight"])
    assert any(t.abs().sum() > 0 for k, t in load_file(str(r.path / "adapter_model.safetensors")).items()
               if "lora_B" in k)
    # served through the real registry and runtime (per-row LoRA) == what the run scored
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone})
    loaded = reg.register(r.path)
    assert loaded.version != content_hash(source_adapter)
    rt = Runtime(reg)
    res = rt.run([rt.prepare([loaded.name], target[:20], "text")])[0][0]
    served = [max(row.scores, key=row.scores.get) for row in res.rows]
    labelled = _data(target_rows[:20], "target")
    acc = sum(s == labelled.label_names[y] for s, y in zip(served, labelled.labels)) / 20
    assert acc == pytest.approx(r.metrics["adapted"].accuracy)


def test_pseudo_label_refuses_what_it_cannot_adapt(source_adapter, text_backbone, tmp_path):
    with pytest.raises(InvalidInput, match="keep_fraction"):
        AdaptConfig(method="pseudo_label", keep_fraction=0)
    with pytest.raises(InvalidInput, match="epochs"):
        AdaptConfig(method="pseudo_label", epochs=0)
    with pytest.raises(InvalidInput, match="at least 20"):
        adapt(source_adapter, ["a text"] * 5, tmp_path / "x", AdaptConfig(method="pseudo_label", progress=False),
              text_backbone)


def test_class_balanced_pseudo_labels_keep_the_minority_class():
    from training.domain.pseudo_label import class_balanced_mask
    # 8 rows predicted class 0 with high confidence, 2 rows class 1 with low confidence
    probs = torch.tensor([[0.99, 0.01]] * 8 + [[0.4, 0.6], [0.3, 0.7]])
    keep = class_balanced_mask(probs, 0.5)
    assert keep[:8].sum() == 4 and keep[8:].tolist() == [False, True]
    # a global top-50% threshold would keep no row of class 1
    assert (probs.max(-1).values.argsort(descending=True)[:5] < 8).all()


def test_cli_pseudo_label_adapts_a_registered_task_into_a_lora_version(source_adapter, text_backbone, tmp_path,
                                                                        capsys):
    from training import cli
    store = open_store(str(tmp_path / "store"))
    reg = Registry(store, {"text": text_backbone})
    version = reg.register(source_adapter).version
    target = tmp_path / "target.txt"
    target.write_text("\n".join(t for t, _ in _shifted(sentiment_rows(30, seed=5))))
    code = cli.main(["adapt", "--task", "sentiment", "--store", str(tmp_path / "store"), "--method", "pseudo_label",
                     "--epochs", "1", "--lr", "0.005", "--lora-r", "4", "--target-data", str(target),
                     "--out", str(tmp_path / "out"), "--quiet", "--no-cache"])
    assert code == 0 and "pseudo_label" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "adapter.json").read_text())
    rec = manifest["training"]["adaptation"]
    assert manifest["kind"] == "lora" and rec["source_version"] == version
    assert rec["settings"]["lora_r"] == 4 and rec["settings"]["epochs"] == 1
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"] == 4
    assert reg.register(tmp_path / "out").version != version
    code = cli.main(["adapt", "--task", "sentiment", "--store", str(tmp_path / "store"), "--method", "pseudo_label",
                     "--keep-fraction", "0", "--target-data", str(target), "--out", str(tmp_path / "o2"), "--quiet"])
    assert code == 2 and "keep_fraction must be in (0, 1]" in capsys.readouterr().err
