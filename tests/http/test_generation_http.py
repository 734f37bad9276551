"""Generation over HTTP on the real server subprocess, spoken by the official ``openai`` client:
``/v1/completions`` and ``/v1/chat/completions``, streamed and not, ``model`` = task or
task@version, usage counts, logprobs, and errors in OpenAI's shape. Expected tokens come from
PEFT's own ``generate`` (LoRA task) and the plain model's (prompt-only chat task).
"""

from __future__ import annotations

import json

import openai
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from support.factories import generation_manifest_dir, head_adapter, peft_causal_lm_dir
from support.http_helpers import register_ok
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server

SYSTEM = "You answer briefly."


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone, lm_backbone):
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                             env={"TASKSWAP_LM_BACKBONES": json.dumps([{"name": "lm", "source": str(tiny_dir / "lm")}])})
    root = tmp_path_factory.mktemp("gen-adapters")
    s.folders = {"v1": peft_causal_lm_dir(root / "v1", lm_backbone.source_path, seed=1),
                 "v2": peft_causal_lm_dir(root / "v2", lm_backbone.source_path, seed=2)}
    s.versions = {k: register_ok(s, f, name="fr")["version"] for k, f in s.folders.items()}
    register_ok(s, generation_manifest_dir(root / "chat", lm_backbone, "chat", prompt_format="chat",
                                           system_prompt=SYSTEM, max_new_tokens=24))
    register_ok(s, head_adapter(root / "sent", text_backbone, "sent"))
    return s


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


def greedy(model, ids: list[int], n: int, eos: int) -> list[int]:
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False)
    toks = out[0, len(ids):].tolist()
    return toks[:toks.index(eos)] if eos in toks else toks


@pytest.fixture(scope="module")
def peft_v1(srv, lm_backbone):
    base = AutoModelForCausalLM.from_pretrained(lm_backbone.source_path)
    return PeftModel.from_pretrained(base, str(srv.folders["v1"])).eval()


def test_completion_equals_peft_generate_with_usage_and_logprobs(srv, client, lm_backbone):
    tok = lm_backbone.tokenizer
    prompt = "The quick brown fox"
    ids = tok(prompt)["input_ids"]
    for version in ("v1", "v2"):
        base = AutoModelForCausalLM.from_pretrained(lm_backbone.source_path)
        ref = greedy(PeftModel.from_pretrained(base, str(srv.folders[version])).eval(), ids, 20, 2)
        r = client.completions.create(model=f"fr@{srv.versions[version]}", prompt=prompt, max_tokens=20,
                                      temperature=0, logprobs=0)
        assert r.choices[0].text == tok.decode(ref, skip_special_tokens=True)
        assert r.model == f"fr@{srv.versions[version]}"
        assert r.usage.prompt_tokens == len(ids)
        assert r.usage.completion_tokens == len(ref) + (r.choices[0].finish_reason == "stop")  # + the EOS token
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert len(r.choices[0].logprobs.token_logprobs) == r.usage.completion_tokens
        assert all(lp <= 0 for lp in r.choices[0].logprobs.token_logprobs)
    # the unpinned name answers with the active version (v2, registered last)
    assert client.completions.create(model="fr", prompt=prompt, max_tokens=4).model == f"fr@{srv.versions['v2']}"


def test_streamed_completion_is_the_same_text_in_pieces(srv, client):
    kw = dict(model=f"fr@{srv.versions['v1']}", prompt="hello world", max_tokens=16)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) > 1  # it did arrive in pieces


def test_chat_uses_the_task_system_prompt_and_the_chat_template(srv, client, lm_backbone):
    tok = lm_backbone.tokenizer
    msgs = [{"role": "user", "content": "Say hi"}]
    text = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, *msgs], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ref = greedy(AutoModelForCausalLM.from_pretrained(lm_backbone.source_path).eval(), ids, 24, 2)
    r = client.chat.completions.create(model="chat", messages=msgs, logprobs=True)
    assert r.choices[0].message.content == tok.decode(ref, skip_special_tokens=True)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids)
    assert len(r.choices[0].logprobs.content) == r.usage.completion_tokens
    streamed = list(client.chat.completions.create(model="chat", messages=msgs, stream=True))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == r.choices[0].message.content


def test_seeded_sampling_repeats_over_http(client):
    kw = dict(model="chat", messages=[{"role": "user", "content": "a story"}], temperature=1.3,
              top_p=0.95, max_tokens=16)
    a = client.chat.completions.create(**kw, seed=5).choices[0].message.content
    assert client.chat.completions.create(**kw, seed=5).choices[0].message.content == a


def test_errors_are_4xx_in_openai_shape(srv, client):
    with pytest.raises(openai.BadRequestError, match="max_tokens 25 is outside 1..24"):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}], max_tokens=25)
    with pytest.raises(openai.NotFoundError, match="nope"):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="generates no text"):
        client.completions.create(model="sent", prompt="x")
    with pytest.raises(openai.BadRequestError, match="over the model's context of 256"):
        client.completions.create(model="fr", prompt="x" * 300, max_tokens=8)
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="fr", prompt="x", n=2)
    r = srv.post("/v1/completions", json={"model": "chat", "prompt": "x", "max_tokens": 99})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_input", r.text
    r = srv.predict(["fr", "sent"], texts=["hello"])
    assert r.status_code == 400 and "mix generation and scoring tasks" in r.text, r.text
    r = srv.post("/v2/models/fr/infer", json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                                           "data": ["hello"]}]})
    assert r.status_code == 400 and "generation" in r.text, r.text  # the v2 protocol scores, never decodes


def test_predict_generates_for_each_text_and_task(srv, client):
    texts = ["hello world", "The quick brown fox"]
    r = srv.predict(["fr", "chat"], texts=texts)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backbone"] == "lm" and [t["task"] for t in body["results"]] == ["fr", "chat"]
    assert body["results"][0]["version"] == srv.versions["v2"]
    for task, res in zip(["fr", "chat"], body["results"]):
        assert res["task_type"] == "generation"
        for text, p in zip(texts, res["predictions"]):
            alone = (client.completions.create(model=task, prompt=text) if task == "fr" else
                     client.chat.completions.create(model=task, messages=[{"role": "user", "content": text}]))
            want = alone.choices[0].text if task == "fr" else alone.choices[0].message.content
            assert (p["text"], p["finish_reason"], p["generated_tokens"]) == (
                want, alone.choices[0].finish_reason, alone.usage.completion_tokens)


def test_the_task_shows_its_generation_settings(srv):
    r = srv.get("/adapters/chat")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["task_type"], body["kind"]) == ("generation", "prompt")
    assert body["generation"]["system_prompt"] == SYSTEM and body["generation"]["max_new_tokens"] == 24


# ---- LoRAX / TGI ------------------------------------------------------------------------
def test_lorax_client_generate_and_stream_with_adapter_id(srv, client, lm_backbone):
    from lorax import Client
    from lorax.errors import BadRequestError

    lx = Client(srv.url)  # LoRAX's client posts to the server's root (the compatibility route)
    pinned = f"fr@{srv.versions['v1']}"
    want = client.completions.create(model=pinned, prompt="hello world", max_tokens=20, logprobs=0)
    r = lx.generate("hello world", adapter_id=pinned, max_new_tokens=20)
    assert r.generated_text == want.choices[0].text
    assert r.details.generated_tokens == want.usage.completion_tokens
    assert r.details.finish_reason.value in ("length", "eos_token")
    assert [t.logprob for t in r.details.tokens] == pytest.approx(want.choices[0].logprobs.token_logprobs, abs=1e-5)
    events = list(lx.generate_stream("hello world", adapter_id=pinned, max_new_tokens=20))
    assert "".join(e.token.text for e in events) == want.choices[0].text
    assert events[-1].generated_text == want.choices[0].text and events[-1].details is not None
    assert all(e.generated_text is None for e in events[:-1])
    # the TGI routes themselves
    r2 = srv.post("/generate", json={"inputs": "hello world", "parameters": {"adapter_id": pinned,
                                                                             "max_new_tokens": 20}})
    assert r2.status_code == 200 and r2.json()["generated_text"] == want.choices[0].text, r2.text
    r3 = srv.post("/generate_stream", json={"inputs": "hello world", "parameters": {"adapter_id": pinned,
                                                                                    "max_new_tokens": 20}})
    assert r3.status_code == 200 and r3.headers["content-type"].startswith("text/event-stream")
    last = json.loads([ln for ln in r3.text.splitlines() if ln.startswith("data:")][-1][5:])
    assert last["generated_text"] == want.choices[0].text
    # errors in TGI's shape, which the client turns into its own exceptions
    with pytest.raises(BadRequestError, match="repetition_penalty"):
        lx.generate("x", adapter_id="fr", repetition_penalty=1.3)
    r4 = srv.post("/generate", json={"inputs": "x", "parameters": {}})
    assert r4.status_code == 400 and "adapter_id" in r4.json()["error"], r4.text


def test_generation_metrics_count_tokens_per_task(srv, client):
    r = client.completions.create(model="fr", prompt="metrics please", max_tokens=5)
    text = srv.get("/metrics").text

    def value(name: str) -> float:
        line = next(ln for ln in text.splitlines() if ln.startswith(name + '{task="fr"}'))
        return float(line.split()[-1])
    assert value("taskswap_generation_completion_tokens_total") >= r.usage.completion_tokens
    assert value("taskswap_generation_prompt_tokens_total") >= r.usage.prompt_tokens
    assert value("taskswap_generation_time_to_first_token_seconds_count") >= 1

