"""token_classification over real HTTP: a real ``bentoml serve`` on a tiny BERT whose tokenizer
splits unknown words into one sub-token per letter (max_length 16, so long texts need windows).

Per-token probabilities are checked against PEFT's own ``AutoModelForTokenClassification``,
offsets against the request text itself.
"""

from __future__ import annotations

import pytest
import torch

from adapters.backbones.base import load_backbone
from support.factories import head_adapter
from support.http_helpers import make_archive, predict_ok, register_ok
from support.server import free_port, server_factory  # noqa: F401  (pytest fixtures)
from support.token_factories import (peft_token_dir, peft_token_model, peft_token_probs, subword_spec,
                             token_head_adapter)

pytestmark = pytest.mark.server

NER = ["O", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
PUNCT = ["O", "COMMA", "PERIOD", "QUESTION"]
# each fits one 16-token window: unicode (accents the uncased tokenizer strips, CJK), runs of
# spaces, a word of 11 sub-tokens
TEXTS = ["john works at  new york bank", "Zü   café, né!", "xylophonist went", "日本 is good"]
LONG = "john went to paris and works at new york city bank in xylophonist " * 4


@pytest.fixture(scope="module")
def bb(tmp_path_factory):
    torch.set_num_threads(1)
    return load_backbone(subword_spec(tmp_path_factory.mktemp("subword"), max_length=16))


@pytest.fixture(scope="module")
def srv(server_factory, bb, tmp_path_factory):
    spec = bb.spec
    return server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=[
        {"name": spec.name, "source": spec.source, "max_length": spec.max_length}])


@pytest.fixture(scope="module")
def tasks(srv, bb, tmp_path_factory):
    """ner-lora (plain PEFT TOKEN_CLS dir), punct (token head), sent (pooled head)."""
    tmp = tmp_path_factory.mktemp("adapters")
    reg = register_ok(srv, peft_token_dir(tmp / "p", bb.source_path, seed=3), "tar.gz",
                      name="ner-lora", labels=NER)
    assert reg["task_type"] == "token_classification" and reg["kind"] == "lora" and reg["labels"] == NER
    register_ok(srv, token_head_adapter(tmp / "h", bb, "punct", PUNCT, seed=1, hidden=(8,)))
    register_ok(srv, head_adapter(tmp / "s", bb, "sent", seed=2))
    return tmp


def test_peft_token_cls_over_http_matches_peft(srv, bb, tasks):
    r = srv.post("/predict", json={"task": "ner-lora", "texts": TEXTS, "subtokens": True})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert res["task_type"] == "token_classification" and res["kind"] == "lora"
    ref = peft_token_probs(peft_token_model(bb.source_path, seed=3), bb.preprocessor.tokenizer, TEXTS)
    for text, p, want in zip(TEXTS, res["predictions"], ref):
        got = torch.tensor([list(t["scores"].values()) for t in p["tokens"]])
        assert torch.allclose(got, want[1:-1], atol=1e-4)  # [CLS] / [SEP] are not listed
        for t in p["tokens"]:
            assert text[t["start"]:t["end"]] == t["token"]
        for e in p["entities"]:
            assert text[e["start"]:e["end"]] == e["text"] and e["entity"] in ("ORG", "LOC")


def test_words_and_entity_offsets_and_mixed_tasks(srv, tasks):
    body = predict_ok(srv, ["sent", "punct", "ner-lora"], texts=TEXTS)
    sent, punct, ner = body["results"]
    assert sent["task_type"] == "single_label" and "label" in sent["predictions"][0]
    words = [[w["word"] for w in p["words"]] for p in punct["predictions"]]
    assert words == [["john", "works", "at", "new", "york", "bank"], ["Zü", "café", ",", "né", "!"],
                     ["xylophonist", "went"], ["日", "本", "is", "good"]]
    assert punct["predictions"][0]["words"][3]["start"] == 15  # after the two spaces
    for p in punct["predictions"]:
        assert "entities" not in p and "tokens" not in p  # not an entity scheme; not asked
        assert all(w["label"] in PUNCT and 0 < w["score"] <= 1 for w in p["words"])
    for text, p in zip(TEXTS, ner["predictions"]):
        for w in p["words"]:
            assert text[w["start"]:w["end"]] == w["word"]
        for e in p["entities"]:
            assert text[e["start"]:e["end"]] == e["text"]
    # each task's answers in the mixed request are its answers alone
    for res in (punct, ner):
        alone = predict_ok(srv, res["task"], texts=TEXTS)["results"][0]
        for a, b in zip(res["predictions"], alone["predictions"]):
            assert [w["label"] for w in a["words"]] == [w["label"] for w in b["words"]]
            assert all(abs(x["score"] - y["score"]) < 1e-4 for x, y in zip(a["words"], b["words"]))


def test_long_input_is_tagged_over_stride_windows(srv, bb, tasks):
    n_tokens = len(bb.preprocessor.tokenizer(LONG, add_special_tokens=False)["input_ids"])
    assert n_tokens > 4 * 16  # several windows of the 16-token backbone
    r = srv.post("/predict", json={"tasks": ["ner-lora", "punct"], "texts": [LONG, "paris"],
                                   "subtokens": True})
    assert r.status_code == 200, r.text
    for res in r.json()["results"]:
        p = res["predictions"][0]
        assert [w["word"] for w in p["words"]] == LONG.split()  # nothing cut
        assert len(p["tokens"]) == n_tokens
        for w in p["words"]:
            assert LONG[w["start"]:w["end"]] == w["word"]
        assert [w["word"] for w in res["predictions"][1]["words"]] == ["paris"]


def test_bad_token_requests_are_4xx(srv, bb, tasks, tmp_path):
    cases = [
        ({"task": "punct", "texts": ["fine"], "subtokens": "yes"}, 422),  # strict boolean
        ({"task": "punct", "texts": ["   "]}, 400),
        ({"task": "punct", "texts": []}, 400),
        ({"task": "punct", "images": ["iVBORw0KGgo="]}, 400),
        ({"task": "punct", "texts": ["x" * 20_000]}, 400),
        ({"task": "nope", "texts": ["fine"]}, 404),
    ]
    for body, code in cases:
        r = srv.post("/predict", json=body)
        assert r.status_code == code, (body, r.text)
        assert "message" in r.json()
    # a TOKEN_CLS directory with the wrong number of labels; a head whose pooling does not
    # fit its task type
    folder = peft_token_dir(tmp_path / "p", bb.source_path, num_labels=3, seed=1)
    r = srv.register_archive(make_archive(folder, "zip"), name="bad-ner", labels=["O", "B-X"])
    assert r.status_code in (400, 422) and "3 outputs" in r.text, r.text
    folder = token_head_adapter(tmp_path / "h", bb, "bad-head", PUNCT)
    text = (folder / "adapter.json").read_text().replace('"token_classification"', '"single_label"')
    (folder / "adapter.json").write_text(text)
    r = srv.register_archive(make_archive(folder, "zip"))
    assert r.status_code == 422 and "does not fit" in r.text, r.text
    assert srv.get("/adapters/bad-head", admin=True).status_code == 404
    assert not srv.internal_errors()


def test_token_task_over_v2_and_beside_embeddings(srv, tasks):
    """The other protocols carry a token task's answers (v2: JSON texts), never a 500."""
    r = srv.post("/v2/models/punct/infer", admin=True, json={"inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS[:2]}]})
    assert r.status_code == 200, r.text
    words = next(o for o in r.json()["outputs"] if o["name"] == "words")
    import json as _json
    assert [w["word"] for w in _json.loads(words["data"][0])] == ["john", "works", "at", "new", "york", "bank"]
    r = srv.post("/predict", json={"tasks": ["punct", "sent"], "texts": TEXTS, "embed": True})
    assert r.status_code == 200, r.text
    assert len(r.json()["embeddings"]) == len(TEXTS) and "words" in r.json()["results"][0]["predictions"][0]
    assert not srv.internal_errors()


def test_evaluate_a_served_tagger_equals_the_folder(srv, bb, tasks, tmp_path, capsys):
    """``taskswap evaluate --url --task`` on a token task scores what the server answers, the
    same numbers as evaluating the adapter folder in-process (long sentences over windows)."""
    import json
    import random
    from training.cli import main
    from training.data.tokens import load_token_file
    from training.evaluate_tokens import evaluate_tagger
    rng = random.Random(0)
    sentences = [t.split() for t in TEXTS + [LONG]]
    rows = [{"tokens": s, "tags": [rng.choice(NER) for _ in s]} for s in sentences]
    (tmp_path / "ner.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code = main(["evaluate", "--url", srv.url, "--task", "ner-lora", "--data", str(tmp_path / "ner.jsonl"),
                 "--quiet", "--json", str(tmp_path / "m.json")])
    assert code == 0, capsys.readouterr()
    got = json.loads((tmp_path / "m.json").read_text())
    want = evaluate_tagger(tasks / "p", load_token_file(tmp_path / "ner.jsonl", labels=NER), bb, labels=NER,
                           progress=False).metrics
    assert got["n"] == want.n == sum(map(len, sentences)) and got["unmatched_words"] == 0
    assert got["confusion"] == want.confusion and got["f1"] == pytest.approx(want.f1)
    assert "entity precision" in capsys.readouterr().out
