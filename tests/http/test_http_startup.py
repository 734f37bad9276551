"""Startup over real HTTP: /readyz only after the backbones ran, and clear failures.

- While the backbones load, ``/livez`` is 200 but ``/readyz`` and predictions answer 503
  (with Retry-After and a message); ``/readyz`` turns 200 once a forward pass has run.
- Invalid settings stop ``bentoml serve`` at once with the reason; a backbone that cannot
  load leaves a server that says so (``/livez`` 503 for the orchestrator, 503 + reason on calls).
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from support.server import REPO, Server, server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server


def poll(srv: Server, until, timeout_s: float = 180, every_s: float = 0.05) -> list[dict]:
    """Probe readyz/livez/predict until ``until(sample)`` holds; returns every sample."""
    samples, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end:
        if srv.proc.poll() is not None:
            pytest.fail(f"server exited early:\n{srv.log_tail()}")
        try:
            s = {"ready": srv.get("/readyz", timeout=2).status_code,
                 "live": srv.get("/livez", timeout=2).status_code}
            r = srv.predict("anything", texts=["x"], timeout=10)
            s.update(predict=r.status_code, body=r.json() if r.headers.get("content-type", "").startswith(
                "application/json") else r.text, retry=r.headers.get("retry-after"))
        except httpx.TransportError:  # not listening yet
            time.sleep(every_s)
            continue
        samples.append(s)
        if until(s):
            return samples
        time.sleep(every_s)
    pytest.fail(f"condition not reached in {timeout_s}s; last {samples[-3:]}\n{srv.log_tail()}")


def test_ready_only_after_backbones_loaded(server_factory, tiny_dir, tmp_path):
    srv = server_factory.start(store=tmp_path / "store", backbones=tiny_backbones_env(tiny_dir), wait=False)
    samples = poll(srv, lambda s: s["ready"] == 200)
    before = samples[:-1]
    assert before, "the server was ready at its very first answer; no loading window was observed"
    for s in before:
        assert s["ready"] == 503 and s["live"] == 200, s
    starting = [s for s in before if s["predict"] == 503]
    late = [s for s in before if s["predict"] != 503]
    assert starting, before[-3:]
    for s in starting:
        assert "starting" in s["body"]["message"] and s["retry"], s
    # The probes of one sample are not atomic: readiness may arrive between them.
    assert len(late) <= 1 and all(s["predict"] == 404 for s in late), late
    assert samples[-1]["live"] == 200 and samples[-1]["predict"] == 404  # ready: the task is unknown
    assert "ready in" in srv.log_tail(20000)  # logged after the warm-up forward pass
    srv.stop()


def test_invalid_settings_stop_the_server_with_the_reason(tmp_path):
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.service:Taskswap", "--host", "127.0.0.1",
           "--port", "1"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TASKSWAP_MAX_INPUTS": "0",
           "TASKSWAP_BACKBONES": '[{"name": "text", "source": "x", "unknown": 1}]'}
    env["PATH"] = f"{sys.exec_prefix}/bin:" + env["PATH"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "invalid Taskswap settings" in out and "max_inputs" in out and "unknown" in out, out[-3000:]


def test_backbone_that_cannot_load_is_reported(server_factory, tmp_path):
    missing = tmp_path / "no-such-model"
    srv = server_factory.start(store=tmp_path / "store", wait=False,
                               backbones=[{"name": "text", "source": str(missing)}])
    samples = poll(srv, lambda s: s["live"] == 503)
    last = samples[-1]
    assert last["ready"] == 503 and last["predict"] == 503, last
    assert "failed to start" in last["body"]["message"] and "does not exist" in last["body"]["message"]
    assert "startup failed" in srv.log_tail(20000)
    srv.stop()


@pytest.mark.parametrize("env,used", [
    ({}, "torch_threads=1 token_budget=512 max_forward_rows=256"),
    ({"TASKSWAP_TORCH_THREADS": "2", "TASKSWAP_TOKEN_BUDGET": "96", "TASKSWAP_MAX_FORWARD_ROWS": "3"},
     "torch_threads=2 token_budget=96 max_forward_rows=3"),
    ({"TASKSWAP_TOKEN_BUDGET": "0"}, "token_budget=0 max_forward_rows=256"),
])
def test_speed_settings_reach_the_batch_path(server_factory, tiny_dir, tmp_path, env, used):
    """TASKSWAP_TORCH_THREADS / _TOKEN_BUDGET / _MAX_FORWARD_ROWS: the server logs what its live
    runtime, batcher and torch use (read back from them, not from the settings), and serves."""
    env = {"TASKSWAP_TORCH_THREADS": "1", **env}  # the test servers' default is 1 thread too
    srv = server_factory.start(store=tmp_path / "store", backbones=tiny_backbones_env(tiny_dir), env=env)
    line = next(x for x in srv.log_tail(50000).splitlines() if "speed settings in use:" in x)
    assert used in line, line
    assert "max_batch_rows=64 max_wait_ms=5" in line
    r = srv.post("/embed", json={"texts": ["a short text", "a much longer text " * 8, "mid length text"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["embeddings"]) == 3
