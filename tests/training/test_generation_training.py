"""Training generation tasks on the tiny random causal LM: data, encoding, the LoRA loop, the
folder it writes, and that folder in and out of PEFT and through the server's own decode engine.

The proof tests: the trained LoRA learns a task it could not do (upper-casing words: validation
chrF rises from the prompt-only baseline), registers through the ordinary lifecycle, and the
decode engine's greedy tokens equal PEFT's own ``generate`` with the saved folder; a plain PEFT
script's adapter registers as is. Training prompts are the server's prompt ids, token for token.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from adapters.errors import InvalidInput
from adapters.format.manifest import GenerationSpec
from adapters.generation.engine import DecodeEngine, EngineLimits
from adapters.generation.requests import Overrides, request_for
from adapters.registry import Registry
from adapters.store import open_store
from support.factories import generation_manifest_dir, peft_causal_lm_dir
from training.config import TrainConfig
from training.generation.batches import collate, length_buckets
from training.generation.data import GenerationData, GenerationExample, load_generation_file
from training.generation.encode import IGNORE, encode
from training.generation.evaluate import evaluate_generation_folder
from training.generation.metrics import generation_scores, token_f1
from training.generation_run import train_generation, write_prompt_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["cat", "dog", "sun", "tree", "moon", "fish", "bird", "star", "rain", "snow", "wind", "leaf"]
SPEC = GenerationSpec(prompt_template="{input}=", max_new_tokens=8)


def upper(words) -> GenerationData:
    return GenerationData([GenerationExample(w, w.upper()) for w in words], "upper-casing")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lm_backbone):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("gen") / "up"
    cfg = TrainConfig(name="up", method="lora", task_type="generation", epochs=8, lr=1e-2, batch_size=4,
                      progress=False)
    return train_generation(upper(WORDS * 3), lm_backbone, cfg, SPEC, out, val=upper(WORDS[:6]),
                            test=upper(WORDS[6:]))


@pytest.fixture
def registry(tmp_path, lm_backbone):
    reg = Registry(open_store(str(tmp_path / "store")), {"lm": lm_backbone})
    reg.sync()
    return reg


def engine_tokens(bb, adapter, prompt, n=8):
    req = request_for(adapter, prompt=prompt, overrides=Overrides(max_tokens=n))
    with DecodeEngine(bb, EngineLimits()) as eng:
        return req, eng.submit(req).result(timeout=120)


# ---- data ----------------------------------------------------------------------------
def test_jsonl_loader_reads_both_shapes_and_names_every_bad_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n\n" + json.dumps(
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "v"}]}) + "\n")
    d = load_generation_file(good)
    assert [(e.prompt, e.completion) for e in d.examples] == [("a", "b"), (None, "v")]
    assert d.examples[1].messages == ({"role": "system", "content": "s"}, {"role": "user", "content": "u"})
    assert d.examples[1].input_text == "u"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(['{"prompt": "a"}', "not json", json.dumps({"messages": [
        {"role": "user", "content": "u"}, {"role": "user", "content": "v"}]}), '{"prompt": "a", "completion": "b"}']))
    with pytest.raises(InvalidInput) as e:
        load_generation_file(bad)
    assert [p.split(":")[0] for p in e.value.problems] == ["bad.jsonl line 1", "bad.jsonl line 2", "bad.jsonl line 3"]
    with pytest.raises(InvalidInput, match="is not a file"):
        load_generation_file(tmp_path / "missing.jsonl")


def test_training_prompt_ids_are_the_servers_and_only_the_completion_carries_loss(registry, lm_backbone, tmp_path):
    tok = lm_backbone.tokenizer
    eos = tok.eos_token_id
    for i, (fields, ex) in enumerate([
            ({"prompt_template": "Say {input}:"}, GenerationExample("hello", "salut")),
            ({"prompt_format": "chat", "system_prompt": "Be brief."}, GenerationExample("hello", "salut")),
            ({"prompt_format": "chat", "prompt_template": "T: {input}"},
             GenerationExample(None, "salut", ({"role": "user", "content": "hello"},)))]):
        a = registry.register(generation_manifest_dir(tmp_path / f"p{i}", lm_backbone, f"p{i}", **fields))
        served = request_for(a, prompt=ex.prompt, messages=[dict(m) for m in ex.messages] if ex.messages else None,
                             overrides=Overrides(max_tokens=4)).prompt_ids
        enc = encode(ex, GenerationSpec(**fields), tok, eos, max_length=256)
        assert enc.ids[:enc.n_prompt] == served
        assert enc.ids[enc.n_prompt:] == tok("salut", add_special_tokens=False)["input_ids"] + [eos]
        assert enc.labels == [IGNORE] * len(served) + enc.ids[len(served):]
    long = encode(GenerationExample("x" * 500, "yz"), SPEC, tok, eos, max_length=64)
    assert len(long.ids) == 64 and long.ids[-3:] == tok("yz")["input_ids"] + [eos]


def test_length_buckets_cover_every_example_once_and_group_similar_lengths():
    lengths = [50, 3, 48, 4, 49, 5, 2, 51]
    for seed in (None, 0, 1):
        batches = length_buckets(lengths, 2, seed)
        assert sorted(i for b in batches for i in b) == list(range(8))
        assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 2 for b in batches)
    assert length_buckets(lengths, 2, 0) != length_buckets(lengths, 2, 1)  # epochs reorder batches
    from training.generation.encode import Encoded
    b = collate([Encoded([5, 6, 7], 1), Encoded([8, 9], 1)], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


# ---- metrics -------------------------------------------------------------------------
def test_scores_are_sacrebleus_and_squads():
    from sacrebleu.metrics import BLEU, CHRF
    hyps, refs = ["le chat est noir", "Bonjour !"], ["le chat noir", "bonjour"]
    s = generation_scores(hyps, refs)
    assert s["chrf"] == round(CHRF().corpus_score(hyps, [refs]).score, 2)
    assert s["bleu"] == round(BLEU().corpus_score(hyps, [refs]).score, 2)
    assert s["exact_match"] == 50.0  # "Bonjour !" == "bonjour" once lower-cased without punctuation
    assert token_f1("le chat est noir", "le chat noir") == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert s["token_f1"] == pytest.approx(100 * (2 * 0.75 / 1.75 + 1) / 2, abs=0.01)
    with pytest.raises(ValueError):
        generation_scores(["a"], [])


# ---- the run -------------------------------------------------------------------------
def test_lora_learns_the_task_and_keeps_its_best_epoch(trained, lm_backbone, tmp_path):
    h = trained.history
    assert len(h["train_loss"]) == 8 and h["val_loss"][-1] < h["val_loss"][0]
    assert h["best_epoch"] == 1 + max(range(8), key=lambda e: (h["val_chrf"][e], -h["val_loss"][e]))
    baseline = train_generation(upper(WORDS), lm_backbone, TrainConfig(
        name="up0", method="prompt", task_type="generation", progress=False), SPEC, tmp_path / "p",
        val=upper(WORDS[:6]), test=upper(WORDS[6:]))
    assert baseline.manifest.kind == "prompt" and not (baseline.path / "adapter_model.safetensors").exists()
    assert trained.metrics["test"]["chrf"] >= baseline.metrics["test"]["chrf"] + 30
    m = json.loads((trained.path / "adapter.json").read_text())
    assert (m["kind"], m["task_type"], m["generation"]["prompt_template"]) == ("lora", "generation", "{input}=")
    assert m["metrics"]["test_chrf"] == trained.metrics["test"]["chrf"]
    assert m["metrics"]["headline"] == {"metric": "val_chrf", "name": "chrF", "higher_is_better": True}
    assert json.loads((trained.path / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    card = (trained.path / "README.md").read_text()
    from training.generation.card import HEADINGS
    assert all(hd in card for hd in HEADINGS) and "| test | 6 |" in card and "loss_curves.png" in card
    assert (trained.path / "loss_curves.png").stat().st_size > 1000


def test_trained_folder_serves_the_tokens_peft_generates(trained, registry, lm_backbone):
    a = registry.register(trained.path)
    assert (a.manifest.kind, a.manifest.task_type, a.name) == ("lora", "generation", "up")
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm_backbone.source_path),
                                           str(trained.path)).eval()
    for word in WORDS[6:]:
        req, ours = engine_tokens(lm_backbone, a, word)
        ids = torch.tensor([req.prompt_ids])
        with torch.inference_mode():
            ref = peft_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                      do_sample=False)[0, ids.shape[1]:].tolist()
        eos = [i for i, t in enumerate(ref) if t in lm_backbone.eos_token_ids]
        assert ours.token_ids == ref[:eos[0] + 1] if eos else ours.token_ids == ref
    # the trainer's reported outputs are what the server answers
    assert [engine_tokens(lm_backbone, a, w)[1].text for w in WORDS[6:]] == trained.outputs["test"]
    ev = evaluate_generation_folder(trained.path, upper(WORDS[6:]), lm_backbone, max_new_tokens=8)
    assert ev.scores == trained.metrics["test"]


def test_a_plain_peft_script_adapter_registers_and_evaluates(registry, lm_backbone, tmp_path):
    folder = peft_causal_lm_dir(tmp_path / "plain", lm_backbone.source_path, seed=3)
    a = registry.register(folder, name="plain")
    assert (a.manifest.kind, a.manifest.task_type) == ("lora", "generation")
    ev = evaluate_generation_folder(folder, upper(WORDS[:3]), lm_backbone, max_new_tokens=6)
    assert ev.task == "plain" and ev.scores["n"] == 3


def test_prompt_only_task_from_a_template_alone_registers(registry, lm_backbone, tmp_path):
    spec = GenerationSpec(prompt_format="chat", prompt_template="Translate: {input}", stop=["\n"])
    path = write_prompt_task("tr", lm_backbone, spec, tmp_path / "tr")
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "adapter.json"]
    a = registry.register(path)
    assert (a.manifest.kind, a.manifest.generation.prompt_template) == ("prompt", "Translate: {input}")


def test_time_budget_stops_training_and_bad_runs_are_refused_before_training(lm_backbone, tmp_path):
    r = train_generation(upper(WORDS * 4), lm_backbone, TrainConfig(
        name="b", method="lora", task_type="generation", epochs=50, batch_size=2, max_train_minutes=1e-6,
        progress=False), SPEC, tmp_path / "b", val=upper(WORDS[:2]))
    assert r.history["time_capped"] and r.history["steps"] == 1 and len(r.history["train_loss"]) == 1
    with pytest.raises(InvalidInput) as e:
        train_generation(GenerationData([], "empty"), lm_backbone, TrainConfig(
            name="x", method="head", task_type="generation"), SPEC, tmp_path / "x")
    assert any("method 'head'" in p for p in e.value.problems) and any("no examples" in p for p in e.value.problems)
    assert not (tmp_path / "x").exists()


def test_evaluation_decoding_stops_where_the_server_stops(registry, lm_backbone, tmp_path):
    """Stop sequences end a row in the trainer's batched greedy decoding as in the engine."""
    from training.generation.decode import greedy_texts
    base = [engine_tokens(lm_backbone, registry.register(generation_manifest_dir(
        tmp_path / "free", lm_backbone, "free", max_new_tokens=24)), w, n=24)[1].text for w in WORDS[:4]]
    stop = next(c for c in base[0] if c.strip())  # a character the model does write
    a = registry.register(generation_manifest_dir(tmp_path / "s", lm_backbone, "s", stop=[stop], max_new_tokens=24))
    served = [engine_tokens(lm_backbone, a, w, n=24)[1].text for w in WORDS[:4]]
    ours = greedy_texts(lm_backbone.model, lm_backbone.tokenizer, upper(WORDS[:4]).examples,
                        GenerationSpec(stop=[stop], max_new_tokens=24), lm_backbone.eos_token_ids, 24)
    assert ours == served and served[0] == base[0][:base[0].index(stop)]
