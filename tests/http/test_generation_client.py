"""Generation through Taskswap's typed client, OpenAI's model listing, admission and
disconnects over HTTP, and the per-task generation metrics, on the real server subprocess
with a tiny random causal LM.

- ``Client.generate`` / ``stream`` and ``AsyncClient``'s: the same text, finish reason, usage
  and token log-probabilities as the server's own OpenAI route answers, for a LoRA task (a
  pinned version) and a chat task; typed results and typed errors.
- ``GET /v1/models`` (the ``openai`` client) lists the backbones and the generation tasks.
- The KV budget holds one long sequence: a second request while it runs is a 429 with
  ``Retry-After``; closing the long stream cancels its sequence (counted as ``cancelled``),
  after which the next request is served at once.
- Rollouts: a canary routes a sticky share of a generation task's requests (by the routing
  header) to the candidate version; a shadow policy on a generation task is refused (422).
- ``/metrics``: tokens in and out, time to first token and inter-token gaps per task.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from adapters.rollout import RolloutPolicy
from support.factories import generation_manifest_dir, head_adapter, peft_causal_lm_dir
from support.http_helpers import register_ok
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)
from taskswap_client import (AsyncClient, Client, GenerationResult, InvalidRequest, OverCapacity, StreamEnd,
                             TaskNotFound, TokenDelta)

pytestmark = pytest.mark.server

LONG_TOKENS = 220  # the long task's sequences: 4 + 220 tokens of the tiny LM's 256-token context
# 256 bytes of KV cache per token on the tiny LM: the budget (~286 tokens) holds one long
# sequence (~230 tokens) and nothing of 100 tokens beside it.
KV_BUDGET_MB = 0.07


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone, lm_backbone):
    env = {"TASKSWAP_LM_BACKBONES": json.dumps([{"name": "lm", "source": str(tiny_dir / "lm")}]),
           "TASKSWAP_GENERATION_KV_BUDGET_MB": str(KV_BUDGET_MB),
           "TASKSWAP_GENERATION_QUEUE_TIMEOUT_S": "0", "TASKSWAP_GENERATION_MAX_WAITING": "1"}
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir), env=env,
                             ready_timeout_s=600)  # a language model and a shared, loaded machine
    root = tmp_path_factory.mktemp("gen-client")
    s.v1 = register_ok(s, peft_causal_lm_dir(root / "v1", lm_backbone.source_path, seed=1), name="fr")["version"]
    s.v2 = register_ok(s, peft_causal_lm_dir(root / "v2", lm_backbone.source_path, seed=2), name="fr")["version"]
    register_ok(s, generation_manifest_dir(root / "chat", lm_backbone, "chat", prompt_format="chat",
                                           system_prompt="Be brief.", max_new_tokens=24))
    register_ok(s, generation_manifest_dir(root / "long", lm_backbone, "long", max_new_tokens=LONG_TOKENS))
    register_ok(s, head_adapter(root / "sent", text_backbone, "sent"))
    return s


@pytest.fixture(scope="module")
def ts(srv):
    with Client(srv.url, retries=0) as c:
        yield c


def route(srv, path: str, body: dict) -> dict:
    r = srv.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def deltas_and_end(events) -> tuple[list[TokenDelta], StreamEnd]:
    *deltas, end = events
    assert all(isinstance(e, TokenDelta) for e in deltas) and isinstance(end, StreamEnd), events
    return deltas, end


# ---- the typed client -----------------------------------------------------------------------
def test_generate_is_the_completion_route_typed(srv, ts):
    pinned = f"fr@{srv.v1}"
    want = route(srv, "/v1/completions", {"model": pinned, "prompt": "hello world", "max_tokens": 20,
                                          "logprobs": 0})
    r = ts.generate(pinned, prompt="hello world", max_tokens=20, logprobs=True)
    assert isinstance(r, GenerationResult)
    assert (r.task, r.version) == ("fr", srv.v1)
    assert r.text == want["choices"][0]["text"] and r.finish_reason == want["choices"][0]["finish_reason"]
    assert r.usage.model_dump() == want["usage"]
    assert [t.logprob for t in r.tokens] == pytest.approx(want["choices"][0]["logprobs"]["token_logprobs"])
    assert len(r.tokens) == r.usage.completion_tokens
    assert ts.generate("fr", prompt="hello world", max_tokens=4).version != srv.v1  # the active one: v2
    assert ts.generate(pinned, prompt="hello world", max_tokens=20).tokens is None


def test_generate_a_chat(srv, ts):
    msgs = [{"role": "user", "content": "Say hi"}]
    want = route(srv, "/v1/chat/completions", {"model": "chat", "messages": msgs})
    r = ts.generate("chat", messages=msgs)
    assert r.text == want["choices"][0]["message"]["content"]
    assert r.usage.model_dump() == want["usage"] and r.task == "chat"


def test_stream_is_the_same_generation_in_pieces(srv, ts):
    pinned = f"fr@{srv.v1}"
    whole = ts.generate(pinned, prompt="The quick brown fox", max_tokens=20, logprobs=True)
    deltas, end = deltas_and_end(list(ts.stream(pinned, prompt="The quick brown fox", max_tokens=20,
                                                logprobs=True)))
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == whole.text
    assert [t.logprob for d in deltas for t in d.tokens] == pytest.approx([t.logprob for t in whole.tokens])
    assert (end.task, end.version, end.finish_reason, end.usage) == ("fr", srv.v1, whole.finish_reason, whole.usage)
    chat = [{"role": "user", "content": "a story"}]
    deltas, end = deltas_and_end(list(ts.stream("chat", messages=chat, temperature=1.2, seed=7)))
    assert "".join(d.text for d in deltas) == ts.generate("chat", messages=chat, temperature=1.2, seed=7).text


def test_async_client_generates_and_streams_the_same(srv, ts):
    pinned = f"fr@{srv.v1}"
    sync = ts.generate(pinned, prompt="hello world", max_tokens=16)

    async def go():
        async with AsyncClient(srv.url, retries=0) as a:
            whole = await a.generate(pinned, prompt="hello world", max_tokens=16)
            events = [e async for e in a.stream(pinned, prompt="hello world", max_tokens=16)]
            with pytest.raises(TaskNotFound):
                await a.generate("nope", prompt="x")
            return whole, events
    whole, events = asyncio.run(go())
    assert whole == sync
    deltas, end = deltas_and_end(events)
    assert "".join(d.text for d in deltas) == sync.text and end.usage == sync.usage


def test_refusals_are_typed_errors(ts):
    with pytest.raises(TaskNotFound, match="nope"):
        ts.generate("nope", prompt="x")
    with pytest.raises(InvalidRequest, match="max_tokens 25 is outside 1..24") as exc:
        ts.generate("chat", messages=[{"role": "user", "content": "x"}], max_tokens=25)
    assert exc.value.status == 400 and exc.value.error == "invalid_input"
    with pytest.raises(InvalidRequest, match="generates no text"):
        list(ts.stream("sent", prompt="x"))
    with pytest.raises(InvalidRequest, match="top_p"):
        ts.generate("fr", prompt="x", top_p=0)
    with pytest.raises(ValueError, match="exactly one of prompt"):
        ts.generate("fr", prompt="x", messages=[{"role": "user", "content": "x"}])


# ---- GET /v1/models -------------------------------------------------------------------------
def test_openai_models_lists_backbones_and_generation_tasks(srv, lm_backbone, tmp_path):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    owners = {m.id: m.owned_by for m in client.models.list()}
    assert owners == {"text": "taskswap-backbone", "vision": "taskswap-backbone", "chat": "taskswap-task",
                      "fr": "taskswap-task", "long": "taskswap-task"}  # never the scoring task 'sent'
    assert client.models.retrieve("fr").owned_by == "taskswap-task"
    assert client.models.retrieve("text").owned_by == "taskswap-backbone"
    with pytest.raises(openai.NotFoundError, match="neither a backbone nor a generation task"):
        client.models.retrieve("sent")
    register_ok(srv, generation_manifest_dir(tmp_path / "brief", lm_backbone, "brief"))
    assert "brief" in {m.id for m in client.models.list()}
    assert srv.delete("/adapters/brief", admin=True).status_code == 200
    assert "brief" not in {m.id for m in client.models.list()}


# ---- admission and disconnects over HTTP ----------------------------------------------------
def finished(srv, task: str, reason: str) -> float:
    line = f'taskswap_generation_finished_total{{reason="{reason}",task="{task}"}}'
    hits = [ln for ln in srv.get("/metrics").text.splitlines() if ln.startswith(line)]
    return float(hits[0].split()[-1]) if hits else 0.0


def test_full_kv_budget_is_a_429_and_a_closed_stream_frees_its_sequence(srv, ts):
    whole = ts.generate("long", prompt="abcd", max_tokens=LONG_TOKENS)
    assert whole.finish_reason == "length", "precondition: the long sequence runs its whole length"
    cancelled = finished(srv, "long", "cancelled")
    stream = ts.stream("long", prompt="abcd", max_tokens=LONG_TOKENS)
    assert isinstance(next(stream), TokenDelta)  # admitted and decoding: it holds most of the budget
    # ~100 tokens do not fit beside it, and the queue timeout is 0: refused, not queued
    r = srv.post("/v1/completions", json={"model": "fr", "prompt": "hello", "max_tokens": 96})
    assert r.status_code == 429, r.text
    assert "KV cache budget" in r.json()["error"]["message"] and float(r.headers["retry-after"]) >= 1
    with pytest.raises(OverCapacity):
        ts.generate("fr", prompt="hello", max_tokens=96)
    stream.close()  # the client leaves after one token
    deadline = time.monotonic() + 60
    while finished(srv, "long", "cancelled") == cancelled:  # the server saw the disconnect
        assert time.monotonic() < deadline, "the closed stream's sequence was never cancelled"
        time.sleep(0.05)
    assert finished(srv, "long", "cancelled") == cancelled + 1
    assert ts.generate("fr", prompt="hello", max_tokens=96).usage.completion_tokens >= 1  # room again


# ---- rollouts ------------------------------------------------------------------------------
def test_a_shadow_candidate_generates_beside_the_active_version_off_the_response_path(srv):
    r = srv.post("/adapters/fr/rollout", admin=True, json={"version": srv.v1, "mode": "shadow"})
    assert r.status_code == 200, r.text
    body = {"prompt": "hello world", "max_tokens": 12}
    try:
        answers = [route(srv, "/v1/completions", {"model": "fr", **body}) for _ in range(3)]
        assert {a["model"] for a in answers} == {f"fr@{srv.v2}"}  # the active version answers
        assert len({a["choices"][0]["text"] for a in answers}) == 1
        deadline = time.monotonic() + 60
        while True:  # the candidate's generation ends after (or while) the answer goes out
            report = srv.get("/adapters/fr/rollout").json()["shadow"]
            if report and report[0]["rows"] + report[0]["skipped"] == 3:
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.1)
        s = report[0]
        assert (s["active_version"], s["candidate_version"]) == (srv.v2, srv.v1)
        assert s["rows"] >= 1, "the engine had room: at least one candidate generation ran"
        # what the candidate generates alone, pinned: the report compares exactly that
        alone = route(srv, "/v1/completions", {"model": f"fr@{srv.v1}", **body})
        same = alone["choices"][0]["text"] == answers[0]["choices"][0]["text"]
        assert s["agreement"] == (1.0 if same else 0.0)
        assert s["candidate_tokens"] == s["rows"] * alone["usage"]["completion_tokens"]
        assert 0.0 <= s["mean_token_agreement"] <= 1.0 and s["mean_abs_delta_top_score"] is None
    finally:
        assert srv.delete("/adapters/fr/rollout", admin=True).status_code == 200


def test_canary_routes_a_sticky_share_of_generations(srv):
    r = srv.post("/adapters/fr/rollout", admin=True, json={"version": srv.v1, "mode": "canary", "fraction": 0.5})
    assert r.status_code == 200, r.text
    header = r.json()["routing_header"]
    try:
        policy = RolloutPolicy(task="fr", candidate=srv.v1, mode="canary", fraction=0.5, updated_at="-")
        want = {f"caller-{i}": srv.v1 if policy.serves_candidate(f"caller-{i}") else srv.v2 for i in range(10)}
        assert set(want.values()) == {srv.v1, srv.v2}, "precondition: both sides drawn"
        for _ in range(2):  # sticky: the same caller, the same version
            for key, version in want.items():
                for path, body in (("/v1/completions", {"model": "fr", "prompt": "hi", "max_tokens": 2}),
                                   ("/v1/chat/completions", {"model": "fr", "max_tokens": 2,
                                                             "messages": [{"role": "user", "content": "hi"}]})):
                    got = route_with(srv, path, body, {header: key})["model"]
                    assert got == f"fr@{version}", (key, path)
        # a pinned version is never rerouted
        assert route_with(srv, "/v1/completions", {"model": f"fr@{srv.v2}", "prompt": "hi", "max_tokens": 2},
                          {header: next(k for k, v in want.items() if v == srv.v1)})["model"] == f"fr@{srv.v2}"
    finally:
        assert srv.delete("/adapters/fr/rollout", admin=True).status_code == 200
    assert route_with(srv, "/v1/completions", {"model": "fr", "prompt": "hi", "max_tokens": 2},
                      {header: "caller-0"})["model"] == f"fr@{srv.v2}"


def route_with(srv, path: str, body: dict, headers: dict) -> dict:
    r = srv.post(path, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


# ---- per-task metrics -----------------------------------------------------------------------
def test_generation_metrics_per_task(srv, ts):
    def value(name: str) -> float:
        text = srv.get("/metrics").text
        hits = [ln for ln in text.splitlines() if ln.startswith(name + '{task="chat"}')]
        return float(hits[0].split()[-1]) if hits else 0.0
    names = ["taskswap_generation_prompt_tokens_total", "taskswap_generation_completion_tokens_total",
             "taskswap_generation_time_to_first_token_seconds_count", "taskswap_generation_inter_token_seconds_count"]
    before = {n: value(n) for n in names}
    msgs = [{"role": "user", "content": "count me"}]
    r = ts.generate("chat", messages=msgs, max_tokens=12, temperature=1.0, seed=3)
    events = list(ts.stream("chat", messages=msgs, max_tokens=12, temperature=1.0, seed=3))
    assert isinstance(events[-1], StreamEnd) and events[-1].usage == r.usage
    after = {n: value(n) for n in names}
    assert after[names[0]] - before[names[0]] == 2 * r.usage.prompt_tokens
    assert after[names[1]] - before[names[1]] == 2 * r.usage.completion_tokens
    assert after[names[2]] - before[names[2]] == 2  # one first token per generation
    # one gap between each pair of consecutive tokens (the engine releases one token per step)
    assert after[names[3]] - before[names[3]] == 2 * (r.usage.completion_tokens - 1)
    assert finished(srv, "chat", "length") + finished(srv, "chat", "eos_token") >= 2
    text = httpx.get(srv.url + "/metrics").text
    assert 'taskswap_generation_time_to_first_token_seconds_bucket{le="+Inf",task="chat"}' in text
