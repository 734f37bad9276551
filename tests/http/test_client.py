"""``taskswap_client``: sync and async against the real server, retries, timeouts, no torch.

- Without torch importable (a subprocess whose import of torch fails), the client imports
  and ``taskswap predict`` answers from the real server.
- ``Client`` and ``AsyncClient``: register (folder and archive), list, show, predict on
  texts and image files, embed, activate (rollback), delete, typed results, typed errors.
- Retries against a small real HTTP server on loopback that answers 429/503 first: the
  client waits what ``Retry-After`` says (seconds or an HTTP date), sends the bearer token
  every time, and gives up with the last error after ``retries``; a slow answer times out.
- The CLI: ``taskswap predict TASK "text"`` / ``--image PATH``, ``register`` and
  ``evaluate --url`` through the client.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import torch

from adapters.format.archive import make_archive
from support.factories import head_adapter
from support.http_helpers import TEXTS, expected_head_scores, png_bytes
from support.server import REPO, server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)
from taskswap_client import AsyncClient, Client, PredictResponse, TaskswapHTTPError

TOKEN = "inference-token-for-client-tests"


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory):
    return server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                                env={"TASKSWAP_INFERENCE_TOKEN": TOKEN})


def scores(answer: PredictResponse, labels) -> torch.Tensor:
    return torch.tensor([[p.scores[lab] for lab in labels] for p in answer.results[0].predictions])


# ---- importable without torch ------------------------------------------------------------------
NO_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here (test)")
sys.meta_path.insert(0, NoTorch())
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch imported anyway")
"""


def run_without_torch(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH + code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_client_imports_without_torch():
    r = run_without_torch("import taskswap_client, sys\n"
                          "from taskswap_client import Client, AsyncClient, PredictResponse\n"
                          "assert 'torch' not in sys.modules and 'bentoml' not in sys.modules\n"
                          "print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.server
def test_cli_predict_runs_without_torch(srv, text_backbone, tmp_path):
    folder = head_adapter(tmp_path / "nt", text_backbone, "nt", seed=4)
    with Client(srv.url, token=srv.admin) as admin:
        admin.register(folder)
    r = run_without_torch("import sys\nfrom training.cli import main\nsys.exit(main(sys.argv[1:]))",
                          "predict", "nt", *TEXTS[:2], "--url", srv.url, "--token", TOKEN)
    assert r.returncode == 0, r.stderr
    expected = expected_head_scores(folder, text_backbone, TEXTS[:2])
    lines = r.stdout.splitlines()
    assert lines[0].startswith("nt (version ")
    assert [line.split("\t")[0] for line in lines[1:]] == [["neg", "pos"][i] for i in expected.argmax(1)]


# ---- the real server -----------------------------------------------------------------------------
@pytest.mark.server
def test_sync_client_lifecycle(srv, text_backbone, vision_backbone, tmp_path):
    with Client(srv.url, token=srv.admin, timeout_s=60) as ts:
        ts.wait_ready(timeout_s=30)
        f1 = head_adapter(tmp_path / "a1", text_backbone, "life", seed=1)
        f2 = head_adapter(tmp_path / "a2", text_backbone, "life", seed=2)
        v1 = ts.register(f1).version  # a folder
        archive = tmp_path / "a2.tar.gz"
        archive.write_bytes(make_archive(f2, "tar.gz"))
        reg = ts.register(archive)  # an archive file
        assert reg.previous_version == v1 and reg.kind == "head"
        assert "life" in [a.name for a in ts.list().adapters]
        assert ts.show("life").active_version == reg.version
        assert {b.name for b in ts.backbones().backbones} == {"text", "vision"}
        answer = ts.predict("life", texts=TEXTS, embed=True)
        assert isinstance(answer, PredictResponse) and answer.results[0].version == reg.version
        torch.testing.assert_close(scores(answer, ["neg", "pos"]), expected_head_scores(f2, text_backbone, TEXTS))
        torch.testing.assert_close(torch.tensor(answer.embeddings), text_backbone.embed(TEXTS))
        with pytest.raises(TaskswapHTTPError) as err:  # compare-and-swap: v2 is active, not v1
            ts.activate("life", v1, expected_version=v1)
        assert err.value.status == 409
        assert ts.activate("life", v1[:12], expected_version=reg.version).active_version == v1  # rollback
        torch.testing.assert_close(scores(ts.predict("life", texts=TEXTS), ["neg", "pos"]),
                                   expected_head_scores(f1, text_backbone, TEXTS))
        emb = ts.embed(texts=TEXTS, normalize=False)
        assert emb.dimensions == text_backbone.hidden_size
        torch.testing.assert_close(torch.tensor(emb.embeddings), text_backbone.embed(TEXTS))
        # images as file paths or bytes
        img = head_adapter(tmp_path / "img", vision_backbone, "img-life", seed=3)
        ts.register(img)
        path = tmp_path / "red.png"
        path.write_bytes(png_bytes())
        answer = ts.predict("img-life", images=[path, png_bytes((0, 0, 250))])
        assert len(answer.results[0].predictions) == 2
        with pytest.raises(TaskswapHTTPError) as err:
            ts.predict("nope", texts=["x"])
        assert err.value.status == 404 and "task 'nope' is not registered" in err.value.message
        with pytest.raises(TaskswapHTTPError) as err:
            ts.delete("life", expected_version=reg.version)  # no longer the active one
        assert err.value.status == 409
        assert ts.delete("life", expected_version=v1).deleted
        with pytest.raises(TaskswapHTTPError) as err:
            ts.show("life")
        assert err.value.status == 404
    with Client(srv.url, token=TOKEN) as reader, pytest.raises(TaskswapHTTPError) as err:
        reader.register(f1)  # the inference token cannot change adapters
    assert err.value.status == 403


@pytest.mark.server
def test_async_client(srv, text_backbone, tmp_path):
    folder = head_adapter(tmp_path / "as", text_backbone, "async-task", seed=6)

    async def main():
        async with AsyncClient(srv.url, token=srv.admin) as ts:
            await ts.wait_ready(timeout_s=30)
            reg = await ts.register(folder)
            answers = await asyncio.gather(*[ts.predict("async-task", texts=[t]) for t in TEXTS])
            emb = await ts.embed(texts=TEXTS[:1])
            listed = await ts.list()
            await ts.delete("async-task")
            return reg, answers, emb, listed

    reg, answers, emb, listed = asyncio.run(main())
    got = torch.cat([scores(a, ["neg", "pos"]) for a in answers])
    torch.testing.assert_close(got, expected_head_scores(folder, text_backbone, TEXTS))
    assert all(a.results[0].version == reg.version for a in answers)
    assert abs(sum(x * x for x in emb.embeddings[0]) - 1) < 1e-4
    assert "async-task" in [a.name for a in listed.adapters]


# ---- retries and timeouts against a scripted real HTTP server ---------------------------------------
EMBED_OK = {"backbone": "text", "pooling": "mean", "normalized": True, "dimensions": 2,
            "embeddings": [[0.6, 0.8]]}


class Scripted:
    """A loopback HTTP server answering POSTs from a script of (status, headers, body, delay)."""

    def __init__(self, script):
        self.script, self.seen, self.task_headers = list(script), [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.seen.append((time.monotonic(), self.headers.get("authorization")))
                outer.task_headers.append(self.headers.get("x-taskswap-task"))
                status, headers, body, delay = outer.script.pop(0) if outer.script else (200, {}, EMBED_OK, 0)
                time.sleep(delay)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for k, v in {**headers, "content-type": "application/json",
                                 "content-length": str(len(data))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is the point of the delay

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


BUSY = {"error": "over_capacity", "message": "server is at capacity", "problems": ["busy"]}


def test_retries_honour_retry_after_seconds_and_http_dates():
    soon = email.utils.formatdate(time.time() + 3, usegmt=True)  # whole seconds: 2-3 s from now
    stub = Scripted([(503, {"retry-after": soon}, BUSY, 0), (429, {"retry-after": "1"}, BUSY, 0)])
    try:
        with Client(stub.url, token="tok", retries=3, backoff_s=0.01) as ts:
            t0 = time.monotonic()
            emb = ts.embed(texts=["x"])
        assert emb.embeddings == [[0.6, 0.8]]
        (t1, a1), (t2, a2), (t3, a3) = stub.seen
        assert t2 - t1 >= 1.5  # the HTTP date, two to three seconds ahead
        assert t3 - t2 >= 0.95  # Retry-After: 1
        assert a1 == a2 == a3 == "Bearer tok"
        assert time.monotonic() - t0 < 10
    finally:
        stub.close()


def test_predict_names_its_first_task_in_the_routing_header():
    """X-Taskswap-Task (the key a proxy hashes, deploy/haproxy/) is the task, or the first
    of several; calls without a task (embed) send none."""
    missing = (404, {}, {"error": "not_found", "message": "no task", "problems": ["no task"]}, 0)
    stub = Scripted([missing, missing])
    try:
        with Client(stub.url, retries=0) as ts:
            for tasks in ("sentiment", ["topic", "sentiment"]):
                with pytest.raises(TaskswapHTTPError):
                    ts.predict(tasks, texts=["x"])
            ts.embed(texts=["x"])
        assert stub.task_headers == ["sentiment", "topic", None]
    finally:
        stub.close()


def test_retries_give_up_with_the_last_error_and_other_errors_are_not_retried():
    stub = Scripted([(429, {"retry-after": "0"}, BUSY, 0)] * 3
                    + [(400, {}, {"error": "invalid_input", "message": "texts[0] is empty", "problems": ["e"]}, 0)])
    try:
        with Client(stub.url, retries=2, backoff_s=0.01) as ts:
            with pytest.raises(TaskswapHTTPError) as err:
                ts.embed(texts=["x"])
            assert err.value.status == 429 and len(stub.seen) == 3
            with pytest.raises(TaskswapHTTPError) as err:
                ts.embed(texts=[""])
            assert err.value.status == 400 and err.value.message == "texts[0] is empty"
            assert len(stub.seen) == 4  # a 400 is not retried
    finally:
        stub.close()


def test_async_retry_and_timeout():
    stub = Scripted([(503, {"retry-after": "1"}, BUSY, 0), (200, {}, EMBED_OK, 3)])

    async def main():
        async with AsyncClient(stub.url, retries=1, timeout_s=1.0) as ts:
            return await ts.embed(texts=["x"])

    try:
        with pytest.raises(httpx.ReadTimeout):  # retried after 1 s, then the answer is too slow
            asyncio.run(main())
        assert len(stub.seen) == 2 and stub.seen[1][0] - stub.seen[0][0] >= 0.95
    finally:
        stub.close()


def test_connection_refused_is_retried_then_raised():
    from support.server import free_port
    with Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.05) as ts:
        t0 = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            ts.embed(texts=["x"])
        assert time.monotonic() - t0 >= 0.05


# ---- the CLI through the client ------------------------------------------------------------------
@pytest.mark.server
def test_cli_predict_register_and_evaluate_against_a_url(srv, text_backbone, vision_backbone, tmp_path, capsys):
    from training import cli
    folder = head_adapter(tmp_path / "cli", text_backbone, "cli-task", seed=8)
    assert cli.main(["register", str(folder), "--url", srv.url, "--token", srv.admin]) == 0
    assert "registered cli-task version " in capsys.readouterr().out
    assert cli.main(["predict", "cli-task", TEXTS[0], "--url", srv.url, "--token", TOKEN, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["results"][0]["task"] == "cli-task"
    img = head_adapter(tmp_path / "cli-img", vision_backbone, "cli-img", seed=9)
    assert cli.main(["register", str(img), "--url", srv.url, "--token", srv.admin]) == 0
    capsys.readouterr()
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes())
    assert cli.main(["predict", "cli-img", "--image", str(path), "--url", srv.url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith(str(path)) and out[1].split("\t")[0] in ("neg", "pos")
    assert cli.main(["predict", "nope", "x", "--url", srv.url, "--token", TOKEN]) == 2
    assert "task 'nope' is not registered" in capsys.readouterr().err

    # evaluate --url: the served task's metrics equal the in-process evaluation of its folder
    data = tmp_path / "eval.csv"
    data.write_text("text,label\n" + "".join(f"{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(TEXTS)))
    served_json, local_json = tmp_path / "served.json", tmp_path / "local.json"
    assert cli.main(["evaluate", "--url", srv.url, "--task", "cli-task", "--token", TOKEN, "--data", str(data),
                     "--quiet", "--json", str(served_json)]) == 0
    assert cli.main(["evaluate", str(folder), "--data", str(data), "--quiet", "--json", str(local_json),
                     "--backbone", str(text_backbone.source_path), "--backbone-name", "text"]) == 0
    served, local = json.loads(served_json.read_text()), json.loads(local_json.read_text())
    assert served["version"] == local["version"]
    assert served["accuracy"] == local["accuracy"] and served["loss"] == pytest.approx(local["loss"], abs=1e-5)
    capsys.readouterr()
    assert cli.main(["evaluate", "--url", srv.url, "--data", str(data)]) == 2
    assert "--task" in capsys.readouterr().err
