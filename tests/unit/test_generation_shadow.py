"""Shadow candidates of generation tasks: background sequences of the decode engine (they use
only room no caller wants, and give it back at once) and the pairing that compares a
candidate's tokens with the caller's (:mod:`adapters.generation.shadow`)."""

from __future__ import annotations

import threading

import pytest

from adapters.generation.engine import DecodeEngine, EngineLimits
from adapters.errors import CapacityError
from adapters.generation.events import Admitted, Delta, Failed, Finished, GenerationRequest
from adapters.generation.sampling import SamplingParams
from adapters.generation.shadow import ShadowPair
from adapters.shadow import ShadowStats

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder:
    """A sink that keeps the events and says when the last one came."""

    def __init__(self, on_delta=None):
        self.events, self.done, self.on_delta = [], threading.Event(), on_delta

    def __call__(self, ev):
        self.events.append(ev)
        if isinstance(ev, Delta) and self.on_delta is not None:
            self.on_delta(self)
        if isinstance(ev, Finished) or not isinstance(ev, (Admitted, Delta)):
            self.done.set()

    @property
    def tokens(self) -> list[int]:
        return [t for e in self.events if isinstance(e, Delta) for t in e.token_ids]

    @property
    def reason(self) -> str | None:
        return self.events[-1].reason if self.events and isinstance(self.events[-1], Finished) else None


def request(bb, prompt: str, tokens: int) -> GenerationRequest:
    return GenerationRequest(bb.tokenizer(prompt)["input_ids"], SamplingParams(max_new_tokens=tokens))


def test_a_background_sequence_with_room_gets_the_tokens_a_caller_gets(lm_backbone):
    req = request(lm_backbone, "The quick brown fox", 12)
    with DecodeEngine(lm_backbone) as eng:
        alone = eng.submit(req).result(timeout=60)
        rec = Recorder()
        assert eng.submit_background(req, rec) is not None
        assert rec.done.wait(60)
    assert isinstance(rec.events[0], Admitted)
    assert (rec.tokens, rec.reason) == (alone.token_ids, alone.finish_reason)


def test_a_waiting_caller_preempts_a_running_background_sequence(lm_backbone):
    long_req = request(lm_backbone, "hello world", 60)
    caller_req = request(lm_backbone, "abc", 8)
    fits_one = (len(long_req.prompt_ids) + 60) * lm_backbone.kv_bytes_per_token()
    with DecodeEngine(lm_backbone) as eng:
        alone = eng.submit(caller_req).result(timeout=60)
    started = threading.Event()
    eng = DecodeEngine(lm_backbone, EngineLimits(kv_budget_bytes=fits_one, queue_timeout_s=30.0))
    with eng:
        background = Recorder(on_delta=lambda r: started.set())
        assert eng.submit_background(long_req, background) is not None
        assert started.wait(60), "the background sequence never started"
        # the budget holds one sequence: the caller's waits, so the background one gives way
        got = eng.submit(caller_req).result(timeout=60)
        assert background.done.wait(60)
    assert background.reason == "preempted" and len(background.tokens) < 60
    assert got.token_ids == alone.token_ids  # the caller's answer is the one it gets alone
    assert eng.budget.used == 0


def test_background_sequences_are_bounded_and_wait_behind_callers(lm_backbone):
    req = request(lm_backbone, "abc", 4)
    admitted = []  # who got KV room, in order
    eng = DecodeEngine(lm_backbone, EngineLimits(max_background=1, max_running=1))
    first, second, caller = Recorder(), Recorder(), Recorder()
    assert eng.submit_background(req, lambda ev: (isinstance(ev, Admitted) and admitted.append("background"),
                                                  first(ev))) is not None
    assert eng.submit_background(req, second) is None  # one at a time: the next is not run
    eng.submit(req, lambda ev: (isinstance(ev, Admitted) and admitted.append("caller"), caller(ev)))
    with eng:
        assert caller.done.wait(60) and first.done.wait(60)
    assert admitted == ["caller", "background"]  # queued first, admitted after the caller
    assert caller.reason in ("length", "eos_token") and first.reason in ("length", "eos_token")
    assert second.events == []


def test_a_shadow_pair_compares_the_candidates_tokens_and_skips_what_cannot_run(lm_backbone):
    stats = ShadowStats("t", "a" * 64, "b" * 64)
    same = request(lm_backbone, "The quick brown fox", 10)
    with DecodeEngine(lm_backbone) as eng:
        for _ in range(2):  # the candidate decodes the same request: the same tokens
            caller = Recorder()
            pair = ShadowPair(stats, caller, lambda sink: eng.submit_background(same, sink))
            eng.submit(same, pair.primary)
            assert caller.done.wait(60)
        other = request(lm_backbone, "zzz qqq", 10)  # a candidate with other tokens
        caller = Recorder()
        pair = ShadowPair(stats, caller, lambda sink: eng.submit_background(other, sink))
        eng.submit(same, pair.primary)
        assert caller.done.wait(60)
        caller = Recorder()  # no room for a candidate: skipped, the caller still answered
        pair = ShadowPair(stats, caller, lambda sink: None)
        eng.submit(same, pair.primary)
        assert caller.done.wait(60) and caller.reason is not None
        deadline = threading.Event()
        for _ in range(600):  # the last candidate may finish after its caller
            if stats.report()["rows"] == 3:
                break
            deadline.wait(0.1)
    r = stats.report()
    assert (r["rows"], r["skipped"]) == (3, 1)
    assert 0.5 <= r["agreement"] < 1.0 and r["candidate_tokens"] >= 3
    assert r["mean_token_agreement"] < 1.0
    assert r["mean_abs_delta_top_score"] is None and r["confusion"] == {}


def test_a_caller_refused_before_admission_counts_as_skipped_and_starts_no_candidate():
    stats, started, caller = ShadowStats("t", "a" * 64, "b" * 64), [], Recorder()
    pair = ShadowPair(stats, caller, lambda sink: started.append(sink))
    pair.primary(Failed(CapacityError("the KV cache budget stayed full")))
    assert started == [] and isinstance(caller.events[0], Failed)
    assert (stats.report()["rows"], stats.report()["skipped"]) == (0, 1)
