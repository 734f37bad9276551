"""Generation on a shared frozen causal LM: registration of PEFT CAUSAL_LM LoRAs and prompt-only
tasks, and the decode engine (continuous batching, per-row LoRA, sampling, stops, admission).

The proof tests: greedy decoding of a registered plain PEFT adapter gives exactly the tokens
PEFT's own ``generate`` gives with that adapter, and a mixed batch (two LoRA tasks, a
prompt-only task, a seeded sampled row) gives each row the tokens it gets alone.
"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from adapters.errors import CapacityError, IncompatibleAdapter, InvalidAdapter, InvalidInput
from adapters.generation.engine import DecodeEngine, EngineLimits
from adapters.generation.events import Admitted, Completion, Delta, Failed, Finished, GenerationRequest
from adapters.generation.requests import Overrides, request_for
from adapters.generation.sampling import SamplingParams
from adapters.registry import Registry
from adapters.store import open_store
from support.factories import generation_manifest_dir, head_adapter, peft_causal_lm_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["The quick brown fox", "hello world, this is a longer prompt that spans chunks", "abc"]


@pytest.fixture
def lm_registry(tmp_path, text_backbone, lm_backbone):
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone, "lm": lm_backbone})
    reg.sync()
    return reg


@pytest.fixture(scope="module")
def peft_dirs(tmp_path_factory, lm_backbone):
    root = tmp_path_factory.mktemp("peft-lm")
    return [peft_causal_lm_dir(root / f"a{i}", lm_backbone.source_path, seed=i,
                               targets=("q_proj", "v_proj") if i == 0 else ("q_proj", "k_proj", "o_proj", "down_proj"))
            for i in range(2)]


def alone(bb, req: GenerationRequest, **limits) -> Completion:
    with DecodeEngine(bb, EngineLimits(**limits)) as eng:
        return eng.submit(req).result(timeout=120)


def test_plain_peft_causal_lm_folder_registers_as_a_generation_lora(lm_registry, peft_dirs):
    a = lm_registry.register(peft_dirs[0], name="fr")
    assert (a.manifest.kind, a.manifest.task_type, a.backbone.name) == ("lora", "generation", "lm")
    assert a.head is None and set(a.weights.modules) == {f"model.layers.{i}.self_attn.{p}_proj"
                                                          for i in range(2) for p in "qv"}


def test_greedy_tokens_equal_peft_generate_with_the_adapter(lm_registry, lm_backbone, peft_dirs):
    for i, folder in enumerate(peft_dirs):
        adapter = lm_registry.register(folder, name=f"task{i}")
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm_backbone.source_path),
                                               str(folder)).eval()
        for prompt in PROMPTS:
            req = request_for(adapter, prompt=prompt, overrides=Overrides(max_tokens=24))
            ids = torch.tensor([req.prompt_ids])
            with torch.inference_mode():
                ref = peft_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                          do_sample=False)[0, ids.shape[1]:].tolist()
            ours = alone(lm_backbone, req, prefill_chunk=8)  # the long prompt runs in 7 chunks
            assert ours.token_ids == ref, (folder.name, prompt)
            # and the adapter matters: the base model decodes other tokens
            base = alone(lm_backbone, GenerationRequest(req.prompt_ids, req.params))
            assert base.token_ids != ours.token_ids


def test_mixed_batch_gives_each_row_the_tokens_it_gets_alone(lm_registry, lm_backbone, peft_dirs):
    a = lm_registry.register(peft_dirs[0], name="a")
    b = lm_registry.register(peft_dirs[1], name="b")
    p = lm_registry.register(generation_manifest_dir(lm_registry.store.root / ".." / "p", lm_backbone, "p",
                                                     prompt_template="Q: {input}\nA:"))
    reqs = [request_for(a, prompt=PROMPTS[0], overrides=Overrides(max_tokens=20)),
            request_for(b, prompt=PROMPTS[1], overrides=Overrides(max_tokens=16)),
            request_for(p, prompt=PROMPTS[2], overrides=Overrides(max_tokens=12)),
            request_for(a, prompt=PROMPTS[2], overrides=Overrides(max_tokens=20, temperature=0.9,
                                                                  top_p=0.9, top_k=40, seed=7,
                                                                  logprobs=True)),
            request_for(b, prompt=PROMPTS[0], overrides=Overrides(max_tokens=20))]
    singles = [alone(lm_backbone, r) for r in reqs]
    widths = []
    eng = DecodeEngine(lm_backbone, EngineLimits(prefill_chunk=16), on_step=lambda rows, *_: widths.append(rows))
    handles = [eng.submit(r) for r in reqs]  # all waiting before the first step: they share steps
    with eng:
        mixed = [h.result(timeout=120) for h in handles]
    assert max(widths) >= 3  # rows of different tasks decoded in one forward
    for s, m in zip(singles, mixed):
        assert m.token_ids == s.token_ids and m.text == s.text and m.finish_reason == s.finish_reason
    assert len(mixed[3].logprobs) == len(mixed[3].token_ids)
    assert mixed[3].logprobs == pytest.approx(singles[3].logprobs, abs=1e-4)
    assert all(lp <= 0 for lp in mixed[3].logprobs)


def test_seed_repeats_a_sampled_generation_and_another_seed_differs(lm_backbone):
    ids = lm_backbone.tokenizer(PROMPTS[0])["input_ids"]
    run = lambda seed: alone(lm_backbone, GenerationRequest(ids, SamplingParams(
        max_new_tokens=24, temperature=1.5, seed=seed))).token_ids
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_stop_sequence_ends_the_text_before_it(lm_backbone):
    ids = lm_backbone.tokenizer(PROMPTS[1])["input_ids"]
    free = alone(lm_backbone, GenerationRequest(ids, SamplingParams(max_new_tokens=30)))
    assert len(free.text) >= 8, "precondition: the base model writes some text for this prompt"
    stop = free.text[4:7]
    first = free.text.find(stop)
    got = alone(lm_backbone, GenerationRequest(ids, SamplingParams(max_new_tokens=30, stop=(stop,))))
    assert (got.text, got.finish_reason) == (free.text[:first], "stop_sequence")
    assert got.completion_tokens < free.completion_tokens


def test_over_the_context_or_the_task_limit_is_refused(lm_registry, lm_backbone):
    p = lm_registry.register(generation_manifest_dir(lm_registry.store.root / ".." / "p", lm_backbone, "p",
                                                     max_new_tokens=8))
    with pytest.raises(InvalidInput, match="max_tokens 9 is outside 1..8"):
        request_for(p, prompt="hi", overrides=Overrides(max_tokens=9))
    eng = DecodeEngine(lm_backbone)
    with pytest.raises(InvalidInput, match="over the model's context of 256"):
        eng.submit(GenerationRequest([5] * 250, SamplingParams(max_new_tokens=8)))
    with pytest.raises(InvalidInput, match="over the whole budget"):
        DecodeEngine(lm_backbone, EngineLimits(kv_budget_bytes=1000)).submit(
            GenerationRequest([5] * 10, SamplingParams(max_new_tokens=8)))


def test_full_kv_budget_waits_then_is_refused_with_capacity_error(lm_backbone):
    per_seq = (10 + 8) * lm_backbone.kv_bytes_per_token()
    eng = DecodeEngine(lm_backbone, EngineLimits(kv_budget_bytes=per_seq, queue_timeout_s=0.0, max_waiting=2))
    first = eng.submit(GenerationRequest([5] * 10, SamplingParams(max_new_tokens=8)))
    second = eng.submit(GenerationRequest([6] * 10, SamplingParams(max_new_tokens=8)))
    with pytest.raises(CapacityError, match="already waiting"):
        eng.submit(GenerationRequest([7] * 10, SamplingParams(max_new_tokens=8)))
    with eng:
        assert first.result(timeout=60).completion_tokens >= 1
        with pytest.raises(CapacityError, match="KV cache budget stayed full") as exc:
            second.result(timeout=60)
    assert exc.value.retry_after_s >= 1
    assert eng.budget.used == 0


def test_a_cancelled_sequence_leaves_at_the_next_step_and_frees_its_cache(lm_backbone):
    ids = lm_backbone.tokenizer(PROMPTS[0])["input_ids"]
    params = SamplingParams(max_new_tokens=40)
    assert alone(lm_backbone, GenerationRequest(ids, params)).completion_tokens > 3, "precondition"
    events, done = [], threading.Event()
    holder = {}

    def sink(ev):
        events.append(ev)
        if isinstance(ev, Delta) and len(events) == 2:  # after its first token: the client leaves
            holder["h"].cancel()
        if isinstance(ev, (Finished, Failed)):
            done.set()

    with DecodeEngine(lm_backbone) as eng:
        holder["h"] = eng.submit(GenerationRequest(ids, params), sink=sink)
        assert done.wait(60)
        assert eng.budget.used == 0 and eng.running == 0
    assert isinstance(events[0], Admitted)
    assert isinstance(events[-1], Finished) and events[-1].reason == "cancelled"
    assert sum(isinstance(e, Delta) for e in events) <= 2


def test_generation_tasks_fit_only_language_models(lm_registry, lm_backbone, text_backbone, tmp_path):
    with pytest.raises(IncompatibleAdapter, match="needs a language-model backbone"):
        lm_registry.register(generation_manifest_dir(tmp_path / "g", text_backbone, "g"))
    with pytest.raises(IncompatibleAdapter, match="is a language model"):
        lm_registry.register(head_adapter(tmp_path / "h", lm_backbone, "h", pooling="mean"))
    bad = generation_manifest_dir(tmp_path / "t", lm_backbone, "t")
    manifest = json.loads((bad / "adapter.json").read_text())
    manifest["generation"]["prompt_template"] = "no slot"
    (bad / "adapter.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidAdapter, match="prompt_template must hold the placeholder"):
        lm_registry.register(bad)


def test_versions_rollback_and_delete_work_for_generation_tasks(lm_registry, lm_backbone, peft_dirs):
    v1 = lm_registry.register(peft_dirs[0], name="t")
    v2 = lm_registry.register(peft_dirs[1], name="t")
    assert lm_registry.resolve("t").version == v2.version
    lm_registry.activate("t", v1.version)
    back = lm_registry.resolve("t")
    assert back.version == v1.version and set(back.weights.modules) == set(v1.weights.modules)
    lm_registry.delete("t")
    with pytest.raises(Exception, match="t"):
        lm_registry.resolve("t")
