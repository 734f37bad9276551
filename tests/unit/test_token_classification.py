"""token_classification through the core: PEFT TOKEN_CLS and per-token heads give PEFT's own
per-token probabilities, words/entities carry exact character offsets, long texts are tagged
over stride windows, and one batch mixes pooled and token tasks (heads and LoRA) in one pass."""

from __future__ import annotations

import pytest
import torch

from adapters.backbones.base import load_backbone
from adapters.errors import IncompatibleAdapter
from adapters.registry import Registry
from adapters.runtime import EmbedSpec, Runtime
from adapters.store import open_store
from adapters.tasks.token_classification import entity_scheme, merge_entities
from support.factories import head_adapter, peft_lora_dir, peft_seq_cls_model, regression_head
from support.token_factories import (peft_token_dir, peft_token_model, peft_token_probs, subword_spec,
                             token_head_adapter)

NER = ["O", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
TEXTS = ["john works at  new york bank",  # two spaces
         "Zü   café, né!",  # accents (stripped by the uncased tokenizer), three spaces
         "xylophonist went to paris",  # one word of 10 sub-tokens
         "日本 is good"]  # characters outside the vocabulary: [UNK] with their own offsets
TOL = 1e-4  # every text above fits in one 16-token window of the test backbone


@pytest.fixture(scope="module")
def sub_bb(tmp_path_factory):
    torch.set_num_threads(1)
    return load_backbone(subword_spec(tmp_path_factory.mktemp("subword"), max_length=16))


@pytest.fixture
def rt(tmp_path, sub_bb):
    reg = Registry(open_store(str(tmp_path / "store")), {"text": sub_bb})
    reg.sync()
    return Runtime(reg)


def token_probs(row) -> torch.Tensor:
    return torch.tensor([list(t["scores"].values()) for t in row.tokens])


def run1(rt, task, texts):
    return rt.run([rt.prepare([task], texts, "text")])[0][0]


def test_peft_token_cls_dir_matches_peft(tmp_path, rt, sub_bb):
    src = sub_bb.source_path
    a = rt.registry.register(peft_token_dir(tmp_path / "p", src, seed=3), name="ner", labels=NER)
    assert a.manifest.task_type == "token_classification" and a.manifest.head.pooling == "tokens"
    res = run1(rt, "ner", TEXTS)
    assert res.task_type == "token_classification"
    ref = peft_token_probs(peft_token_model(src, seed=3), sub_bb.preprocessor.tokenizer, TEXTS)
    for row, want in zip(res.rows, ref):
        assert torch.allclose(token_probs(row), want[1:-1], atol=TOL)  # [CLS]/[SEP] not listed


def test_token_head_matches_head_on_last_hidden_state(tmp_path, rt, sub_bb):
    rt.registry.register(token_head_adapter(tmp_path / "h", sub_bb, "tags", NER, seed=1, hidden=(8,)))
    a = rt.registry.resolve("tags")
    enc = sub_bb.preprocess(TEXTS)
    with torch.no_grad():
        want = torch.softmax(a.head(sub_bb.model(**enc).last_hidden_state), -1)  # [texts, seq, labels]
    for i, row in enumerate(run1(rt, "tags", TEXTS).rows):
        assert torch.allclose(token_probs(row), want[i, enc["attention_mask"][i].bool()][1:-1], atol=TOL)


def test_words_and_spans_have_exact_character_offsets(tmp_path, rt, sub_bb):
    rt.registry.register(token_head_adapter(tmp_path / "h", sub_bb, "tags", NER, seed=2))
    rows = run1(rt, "tags", TEXTS).rows
    words = [[w["word"] for w in r.words] for r in rows]
    assert words == [["john", "works", "at", "new", "york", "bank"],
                     ["Zü", "café", ",", "né", "!"],
                     ["xylophonist", "went", "to", "paris"],
                     ["日", "本", "is", "good"]]
    for text, row in zip(TEXTS, rows):
        for w in row.words:
            assert text[w["start"]:w["end"]] == w["word"]
        for t in row.tokens:
            assert text[t["start"]:t["end"]] == t["token"]
        for e in row.entities:
            assert text[e["start"]:e["end"]] == e["text"]
        # a word's label is its first sub-token's
        first = {t["start"]: t for t in row.tokens}
        for w in row.words:
            assert w["label"] == first[w["start"]]["label"] and w["score"] == first[w["start"]]["score"]
    assert len([t for t in rows[2].tokens if 0 <= t["start"] < 11]) == 11  # xylophonist
    assert rows[0].words[3]["start"] == 15  # after the double space


def test_long_text_is_tagged_over_stride_windows(tmp_path, rt, sub_bb):
    """16-token windows (14 content tokens, stride 3): each token's probabilities are PEFT's
    in the window where it has most context, and no token is lost."""
    src = sub_bb.source_path
    rt.registry.register(peft_token_dir(tmp_path / "p", src, seed=4), name="ner", labels=NER)
    text = "john went to paris and works at new york city bank in xylophonist " * 3
    row = run1(rt, "ner", [text]).rows[0]
    tok = sub_bb.preprocessor.tokenizer
    full = tok(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert [(t["start"], t["end"]) for t in row.tokens] == [tuple(o) for o in full]
    assert [w["word"] for w in row.words] == text.split()
    # reference: PEFT on each window the tokenizer makes, the most central window per token
    stride = sub_bb.preprocessor.stride
    enc = tok([text], truncation=True, max_length=16, stride=stride, return_overflowing_tokens=True,
              return_offsets_mapping=True, return_tensors="pt", padding=True)
    model = peft_token_model(src, seed=4)
    with torch.no_grad():
        p = torch.softmax(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                token_type_ids=enc["token_type_ids"]).logits, -1)
    assert len(p) >= 3
    candidates: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for w in range(len(p)):
        offs = [tuple(o) for o in enc["offset_mapping"][w].tolist()]
        content = [i for i, o in enumerate(offs) if o[1] > o[0]]
        for k, i in enumerate(content):
            left = k if w > 0 else 99
            right = len(content) - 1 - k if w < len(p) - 1 else 99
            candidates.setdefault(offs[i], []).append((min(left, right), p[w, i]))
    got = token_probs(row)
    for j, t in enumerate(row.tokens):
        cands = candidates[(t["start"], t["end"])]
        best = max(c for c, _ in cands)
        assert any(torch.allclose(got[j], q, atol=TOL) for c, q in cands if c == best)
        assert min(best, 99) >= stride // 2 or best == 99  # every token keeps context


def test_mixed_batch_pooled_and_token_tasks_equal_alone_and_peft(tmp_path, rt, sub_bb):
    src = sub_bb.source_path
    reg = rt.registry
    reg.register(peft_token_dir(tmp_path / "tl", src, seed=5), name="ner-lora", labels=NER)
    reg.register(token_head_adapter(tmp_path / "th", sub_bb, "ner-head", NER, seed=6))
    reg.register(head_adapter(tmp_path / "ch", sub_bb, "sent", seed=7))
    reg.register(head_adapter(tmp_path / "rh", sub_bb, "sent3", labels=("a", "b", "c"), seed=8,
                              task_type="multi_label"))
    reg.register(peft_lora_dir(tmp_path / "sl", src, num_labels=2, seed=9), name="sent-lora",
                 labels=["neg", "pos"])
    reg.register(regression_head(tmp_path / "rg", sub_bb, "rating", ("valence", "arousal"),
                                 {"valence": {"mean": 5.0, "std": 2.0}, "arousal": {"mean": 1.0, "std": 0.5}},
                                 seed=10)[0])
    long = "john went to paris and works at new york city bank " * 2  # windows in a mixed batch
    texts = TEXTS + [long]
    names = ["ner-lora", "ner-head", "sent", "sent3", "sent-lora", "rating"]
    alone = {n: run1(rt, n, texts) for n in names}
    reqs = [rt.prepare(["sent", "ner-head", "ner-lora"], texts[:3], "text"),
            rt.prepare(["sent-lora", "sent3", "ner-head"], texts, "text"),
            rt.prepare(["ner-lora", "rating"], texts[3:], "text"),
            rt.prepare(["sent", "rating"], texts[2:], "text")]
    mixed = rt.run(reqs)
    offsets = [0, 0, 3, 2]
    for req, results, off in zip(reqs, mixed, offsets):
        for a, res in zip(req.adapters, results):
            want = alone[a.name].rows[off:off + len(req.inputs)]
            for got_row, want_row in zip(res.rows, want):
                if a.manifest.task_type == "token_classification":
                    assert [w["word"] for w in got_row.words] == [w["word"] for w in want_row.words]
                    assert torch.allclose(token_probs(got_row), token_probs(want_row), atol=TOL), a.name
                elif a.manifest.task_type == "regression":
                    assert got_row.values.keys() == want_row.values.keys()
                    assert all(abs(got_row.values[k] - want_row.values[k]) < TOL for k in got_row.values)
                else:
                    assert torch.allclose(torch.tensor(list(got_row.scores.values())),
                                          torch.tensor(list(want_row.scores.values())), atol=TOL), a.name
    # and the alone answers are PEFT's own (short texts: no windows)
    tok = sub_bb.preprocessor.tokenizer
    ref = peft_token_probs(peft_token_model(src, seed=5), tok, TEXTS)
    for row, want in zip(alone["ner-lora"].rows, ref):
        assert torch.allclose(token_probs(row), want[1:-1], atol=TOL)
    seq = peft_seq_cls_model(src, 2, seed=9)
    with torch.no_grad():
        ref = torch.softmax(seq(**sub_bb.preprocess(texts)).logits, -1)
    got = torch.tensor([list(r.scores.values()) for r in alone["sent-lora"].rows])
    assert torch.allclose(got, ref, atol=TOL)


def test_pooled_only_batches_do_not_tokenise_for_tokens(tmp_path, rt, sub_bb, monkeypatch):
    rt.registry.register(head_adapter(tmp_path / "ch", sub_bb, "sent", seed=7))
    called = []
    monkeypatch.setattr(sub_bb, "token_windows", lambda x: called.append(x))
    run1(rt, "sent", TEXTS)
    assert called == []


def test_token_head_on_a_vision_backbone_is_refused(tmp_path, registry, vision_backbone):
    folder = token_head_adapter(tmp_path / "v", vision_backbone, "vis-tags", ["O", "X"])
    with pytest.raises(IncompatibleAdapter, match="tokens"):
        registry.register(folder, backbone="vision")


def test_manifest_pooling_must_fit_the_task_type(sub_bb):
    from adapters.format.manifest import Manifest
    from adapters.plugin_checks import validate_manifest
    base = {"name": "x", "kind": "head", "labels": ["O", "B-X"], "backbone": {"name": "text"}}
    with pytest.raises(ValueError, match="does not fit"):
        validate_manifest(Manifest.model_validate({**base, "task_type": "token_classification",
                                                "head": {"pooling": "mean", "input_dim": 32}}))
    with pytest.raises(ValueError, match="does not fit"):
        validate_manifest(Manifest.model_validate({**base, "head": {"pooling": "tokens", "input_dim": 32}}))
    with pytest.raises(ValueError, match="at least 2 labels"):
        validate_manifest(Manifest.model_validate({**base, "labels": ["O"], "task_type": "token_classification",
                                                "head": {"pooling": "tokens", "input_dim": 32}}))


@pytest.mark.parametrize("tags, want", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["I-PER", "I-PER", "I-LOC"], [("PER", 0, 2), ("LOC", 2, 3)]),  # conlleval: I- after O starts
    (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
    (["U-ORG", "B-LOC", "I-LOC", "L-LOC", "I-LOC"], [("ORG", 0, 1), ("LOC", 1, 4), ("LOC", 4, 5)]),
    (["S-ORG", "B-MISC", "E-MISC", "O"], [("ORG", 0, 1), ("MISC", 1, 3)]),
    (["O", "O"], []),
])
def test_merge_entities(tags, want):
    spans = [(i * 2, i * 2 + 1) for i in range(len(tags))]  # word i = text[2i]
    text = "abcdefghij"
    got = merge_entities(tags, spans, [0.5] * len(tags), text)
    assert [(e["entity"], e["start"] // 2, (e["end"] + 1) // 2) for e in got] == want
    assert all(e["text"] == text[e["start"]:e["end"]] and e["score"] == 0.5 for e in got)


def test_entity_scheme_detection():
    assert entity_scheme(NER) and entity_scheme(["O", "U-X", "B-X", "I-X", "L-X"])
    assert not entity_scheme(["O", "COMMA", "PERIOD", "QUESTION"])
    assert not entity_scheme(["NOUN", "VERB"]) and not entity_scheme(["O"])


def test_trunk_rows_of_a_request_count_every_window(tmp_path, rt, sub_bb):
    """``PreparedRequest.rows`` (what max_batch_rows and the queue limit count) is the number of
    trunk rows the runtime really runs: a long text in a token task costs one per window, on
    each row per-token tasks read (the shared head row, each token LoRA's own rows)."""
    reg = rt.registry
    reg.register(peft_token_dir(tmp_path / "tl", sub_bb.source_path, seed=5), name="ner-lora", labels=NER)
    reg.register(token_head_adapter(tmp_path / "th", sub_bb, "ner-head", NER, seed=6))
    reg.register(head_adapter(tmp_path / "ch", sub_bb, "sent", seed=7))
    long = "john went to paris and works at new york city bank " * 3
    windows = len(sub_bb.token_windows([long]).windows[0])
    assert windows >= 3 and sub_bb.token_window_counts(TEXTS + [long]) == [1] * len(TEXTS) + [windows]
    seen = []
    hook = sub_bb.model.embeddings.register_forward_hook(lambda m, args, out: seen.append(out.shape[0]))
    try:
        cases = {("sent",): 2, ("ner-head",): 1 + windows, ("sent", "ner-head"): 1 + windows,
                 ("ner-lora",): 1 + windows, ("sent", "ner-lora"): 2 + 1 + windows,
                 ("ner-head", "ner-lora"): 2 * (1 + windows)}
        for tasks, want in cases.items():
            req = rt.prepare(list(tasks), [TEXTS[0], long], "text")
            seen.clear()
            rt.run([req])
            assert req.rows == want == sum(seen), (tasks, req.rows, want, seen)
    finally:
        hook.remove()


def test_batcher_queue_limit_counts_windows(tmp_path, rt, sub_bb):
    import threading
    from adapters.batching import Batcher
    from adapters.errors import CapacityError
    rt.registry.register(token_head_adapter(tmp_path / "th", sub_bb, "ner-head", NER, seed=6))
    long = rt.prepare(["ner-head"], ["john went to paris and works at new york city bank " * 3], "text")
    assert long.rows == len(sub_bb.token_windows(long.inputs).windows[0]) > 1
    gate, run = threading.Event(), rt.run
    rt.run = lambda reqs: (gate.wait(10), run(reqs))[1]  # hold the worker on the first batch
    b = Batcher(rt, max_batch_rows=64, max_wait_ms=1, max_queue_rows=1 + long.rows)
    try:
        first = b.submit(rt.prepare(["ner-head"], ["john"], "text"))
        second = b.submit(long)
        assert b.queued_rows == 1 + long.rows
        with pytest.raises(CapacityError, match="at capacity"):  # one row more does not fit
            b.submit(rt.prepare(["ner-head"], ["paris"], "text"))
        gate.set()
        assert len(first.result(10)[0].rows) == 1 and len(second.result(10)[0].rows) == 1
    finally:
        gate.set()
        b.close()


def test_results_count_the_tokens_the_trunk_read(tmp_path, rt, sub_bb):
    """``Results.tokens`` (what /v1/embeddings reports as usage) is each request's real tokens
    after truncation to max_length, read off the batch's own encoding: the same whether the
    batch is plain or split into a token task's stride windows (a long text: its first window)."""
    rt.registry.register(token_head_adapter(tmp_path / "th", sub_bb, "ner-head", NER, seed=6))
    rt.registry.register(head_adapter(tmp_path / "ch", sub_bb, "sent", seed=7))
    long = "john went to paris and works at new york city bank " * 2  # longer than 16 tokens
    tok = sub_bb.preprocessor.tokenizer

    def want(texts):
        return sum(len(ids) for ids in tok(texts, truncation=True, max_length=16)["input_ids"])

    a, b = TEXTS[:2], TEXTS[2:] + [long]
    plain = rt.run([rt.prepare(["sent"], a, "text"), rt.prepare_embed("text", b, "text", EmbedSpec())])
    windowed = rt.run([rt.prepare(["ner-head"], a, "text"), rt.prepare_embed("text", b, "text", EmbedSpec())])
    assert [r.tokens for r in plain] == [r.tokens for r in windowed] == [want(a), want(b)]
    assert want([long]) == 16  # truncated: the count is what the trunk read, not the whole text
