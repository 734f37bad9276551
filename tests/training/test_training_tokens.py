"""Training taggers: CoNLL/JSONL loaders, punctuation data from real text, seqeval metrics
against hand-computed cases, and head/LoRA runs whose exported folder the server's runtime
serves with the probabilities the trainer measured."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.errors import InvalidInput
from adapters.runtime import Runtime
from adapters.tasks.token_metrics import token_metrics
from training.config import TrainConfig
from training.data.tokens import TokenData, load_conll, load_token_file, punctuation_example
from training.tokens import train_tokens

NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_conll_and_jsonl_loaders(tmp_path):
    (tmp_path / "a.conll").write_text("-DOCSTART-\tO\n\njohn\tB-PER\nsmith\tI-PER\nin\tO\nparis\tB-LOC\n\n"
                                      "bob\tB-PER\n")
    d = load_conll(tmp_path / "a.conll")
    assert d.sentences == [["john", "smith", "in", "paris"], ["bob"]]
    assert d.label_names == ["O", "B-LOC", "B-PER", "I-PER"] and d.tags[0] == [2, 3, 0, 1]
    rows = [{"tokens": ["john", "in", "paris"], "tags": ["B-PER", "O", "B-LOC"]}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    j = load_token_file(tmp_path / "a.jsonl", labels=NER)
    assert j.label_names == NER and j.tags == [[1, 0, 3]]
    (tmp_path / "bad.jsonl").write_text('{"tokens": ["a"], "tags": []}\nnot json\n')
    with pytest.raises(InvalidInput, match="line 1.*line 2|line 2.*line 1"):
        load_token_file(tmp_path / "bad.jsonl")
    (tmp_path / "bad.conll").write_text("john\n\nx\tY\n")
    with pytest.raises(InvalidInput, match="line 1"):
        load_conll(tmp_path / "bad.conll")
    with pytest.raises(InvalidInput, match="not in the given labels"):
        load_token_file(tmp_path / "a.jsonl", labels=["O", "B-PER"])


def test_punctuation_tags_come_from_the_text():
    words, tags = punctuation_example('He said: "Really?" No, it\'s fine... Great!')
    assert words == ["he", "said", "really", "no", "it", "'", "s", "fine", "great"]
    assert tags == ["O", "COMMA", "QUESTION", "COMMA", "O", "O", "O", "PERIOD", "PERIOD"]


@pytest.mark.parametrize("true, pred, want", [
    # hand-computed: entities (type, start, end); P = correct / predicted, R = correct / true
    ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]], (1.0, 1.0, 1.0)),
    ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]], (0.5, 0.5, 1.0)),  # PER cut short
    ([["B-PER", "I-PER", "O", "O"]], [["B-PER", "I-PER", "B-LOC", "I-LOC"]], (0.5, 1.0, 0.5)),
    ([["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]], (1.0, 1.0, 1.0)),  # I- after O starts a chunk
    ([["B-PER", "B-PER"]], [["B-PER", "I-PER"]], (0.0, 0.0, 0.5)),
])
def test_entity_metrics_match_hand_computed(true, pred, want):
    pos = {t: i for i, t in enumerate(NER)}
    m = token_metrics([[pos[t] for t in s] for s in true], [[pos[t] for t in s] for s in pred], NER)
    p, r, acc_wanted = want
    assert m.precision == pytest.approx(p) and m.recall == pytest.approx(r)
    f1 = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    assert m.f1 == pytest.approx(f1)
    words = sum(len(s) for s in true)
    assert m.accuracy == pytest.approx(sum(a == b for s, q in zip(true, pred) for a, b in zip(s, q)) / words)
    assert sum(map(sum, m.confusion)) == words


def test_non_entity_tags_score_per_word():
    names = ["O", "COMMA", "PERIOD"]
    m = token_metrics([[0, 1, 0, 2], [1, 2]], [[0, 1, 1, 2], [0, 2]], names)
    per = {r.label: r for r in m.per_type}
    assert per["COMMA"].precision == pytest.approx(0.5) and per["COMMA"].recall == pytest.approx(0.5)
    assert per["PERIOD"].f1 == pytest.approx(1.0) and m.accuracy == pytest.approx(4 / 6)
    assert m.confusion[1] == [1, 1, 0]


def toy_tags() -> TokenData:
    # "good"/"great" are B-PER-ish, "film"/"movie" follow them: learnable from the tiny model
    s = [["good", "film", "is", "fun"], ["the", "great", "movie"], ["a", "bad", "plot"], ["fun", "good", "film"]]
    t = [[1, 2, 0, 0], [0, 1, 2], [0, 0, 0], [0, 1, 2]]
    return TokenData(s * 4, t * 4, ["O", "B-PER", "I-PER"], "toy")


@pytest.mark.parametrize("method", ["head", "lora"])
def test_trained_tagger_is_served_as_trained(tmp_path, registry, text_backbone, method, one_torch_thread):
    data = toy_tags()
    cfg = TrainConfig(name=f"tagger-{method}", task_type="token_classification", method=method,
                      epochs=3 if method == "lora" else 30, progress=False)
    r = train_tokens(data, text_backbone, cfg, tmp_path / "out", test=data.subset([0, 1, 2]))
    assert r.manifest.kind == method and r.manifest.head.pooling == "tokens"
    assert {"val_token_accuracy", "val_entity_f1", "test_entity_f1"} <= set(r.manifest.metrics)
    card = (r.path / "README.md").read_text()
    assert "Per-type report" in card and "| PER |" in card and "first sub-token" in card
    assert (r.path / "confusion_matrix.png").stat().st_size > 0
    # the server's runtime gives the probabilities the trainer scored with
    registry.register(r.path)
    rt = Runtime(registry)
    texts = [" ".join(s) for s in data.sentences[:3]]
    rows = rt.run([rt.prepare([cfg.name], texts, "text")])[0][0].rows
    from training.token_fit import fit_token_head  # noqa: F401  (the module under test)
    got = [w["label"] for row in rows for w in row.words]
    want_m = r.metrics["test"]
    assert len(got) == want_m.n
    acc = sum(g == data.label_names[t] for g, t in zip(got, [t for s in data.tags[:3] for t in s])) / len(got)
    assert acc == pytest.approx(want_m.accuracy)


def test_bad_training_requests(tmp_path, text_backbone):
    one_tag = TokenData([["a", "b"]] * 6, [[0, 0]] * 6, ["O", "X"], "toy")
    cfg = TrainConfig(name="t", task_type="token_classification", progress=False)
    with pytest.raises(InvalidInput, match="at least 2"):
        train_tokens(one_tag, text_backbone, cfg, tmp_path / "o")
    with pytest.raises(InvalidInput, match="top_layers.*head, lora or scratch"):
        train_tokens(toy_tags(), text_backbone, cfg.model_copy(update={"method": "top_layers"}), tmp_path / "o")


def test_scratch_baseline_is_a_report_scored_like_the_adapters(tmp_path, text_backbone, one_torch_thread):
    data = toy_tags()
    cfg = TrainConfig(name="tagger-scratch", task_type="token_classification", method="scratch", epochs=40,
                      progress=False)
    r = train_tokens(data, text_backbone, cfg, tmp_path / "out", test=data.subset([0, 1, 2]))
    assert not r.servable and r.manifest is None
    files = {p.name for p in r.path.iterdir()}
    assert {"README.md", "metrics.json", "loss_curves.png", "confusion_matrix.png"} <= files
    assert not files & {"adapter.json", "head.safetensors", "adapter_model.safetensors"}
    card = (r.path / "README.md").read_text()
    assert "BiGRU" in card and "Not servable" in card and "| PER |" in card
    m = r.metrics["test"]
    assert m.n == 10 and 1 <= r.history.best_epoch <= len(r.history.train_loss)
    # the toy pattern (a tag on "good"/"great" and the word after) is learnable from scratch
    assert r.metrics["train"].accuracy > 0.9, r.metrics["train"]


def test_cli_trains_a_tagger_from_conll(tmp_path, text_backbone, one_torch_thread, capsys):
    from training.cli import main
    lines = []
    for words, tags in zip(toy_tags().sentences, toy_tags().tags):
        lines += [f"{w}\t{['O', 'B-PER', 'I-PER'][t]}" for w, t in zip(words, tags)] + [""]
    (tmp_path / "train.conll").write_text("\n".join(lines))
    code = main(["train", "--name", "tagger", "--task-type", "token_classification", "--data",
                 str(tmp_path / "train.conll"), "--backbone", str(text_backbone.source_path),
                 "--max-length", "32", "--epochs", "5", "--quiet", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "token accuracy" in out, out
    manifest = json.loads((tmp_path / "out" / "adapter.json").read_text())
    assert manifest["task_type"] == "token_classification" and manifest["labels"] == ["O", "B-PER", "I-PER"]
    assert main(["train", "--name", "tagger", "--task-type", "token_classification", "--demo", "digits",
                 "--backbone", str(text_backbone.source_path), "--out", str(tmp_path / "o2")]) == 2


def test_cli_evaluates_a_tagger_as_served(tmp_path, text_backbone, one_torch_thread, capsys):
    """``taskswap evaluate`` on a tagger: the server's runtime tags the joined words, and the
    scores equal the trainer's own (same first sub-tokens), words the tokenizer splits further
    (``U.S.``) and accented words included."""
    from training.cli import main
    data = toy_tags()
    extra = TokenData([["U.S.", "good", "film"], ["Zü", "great", "movie", "naïve"]], [[0, 1, 2], [0, 1, 2, 0]],
                      data.label_names, "toy")
    test = TokenData(data.sentences[:3] + extra.sentences, data.tags[:3] + extra.tags, data.label_names, "toy")
    cfg = TrainConfig(name="tagger", task_type="token_classification", epochs=30, progress=False)
    r = train_tokens(data, text_backbone, cfg, tmp_path / "out", test=test)
    rows = [{"tokens": s, "tags": [data.label_names[t] for t in tags]} for s, tags in zip(test.sentences, test.tags)]
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    code = main(["evaluate", str(r.path), "--data", str(tmp_path / "test.jsonl"), "--backbone",
                 str(text_backbone.source_path), "--max-length", "32", "--quiet", "--json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    got = json.loads((tmp_path / "m.json").read_text())
    want = r.metrics["test"]
    assert got["n"] == want.n == 17 and got["unmatched_words"] == 0
    assert got["accuracy"] == pytest.approx(want.accuracy) and got["f1"] == pytest.approx(want.f1)
    assert got["confusion"] == want.confusion
    assert "token accuracy" in out and "PER" in out and "confusion over tags" in out
    # a pooled adapter's data loader is not used for a tagger, and a wrong tag set is named
    (tmp_path / "bad.jsonl").write_text(json.dumps({"tokens": ["a"], "tags": ["B-ORG"]}) + "\n")
    assert main(["evaluate", str(r.path), "--data", str(tmp_path / "bad.jsonl"), "--backbone",
                 str(text_backbone.source_path), "--max-length", "32", "--quiet"]) == 2
    assert "not in the given labels" in capsys.readouterr().err
