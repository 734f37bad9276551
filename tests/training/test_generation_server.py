"""Generation training meets the real server subprocess: a LoRA trained by the CLI registers
(``--register``) and answers through ``/v1/chat/completions`` with the text the trainer reported;
``taskswap evaluate --url`` (through the OpenAI routes) gives the folder evaluation's numbers;
``POST /adapters/{task}/fit`` trains a generation LoRA as a job and serves it; bad fit bodies
get a 400/422 naming the problem."""

from __future__ import annotations

import json

import pytest

from support.http_helpers import wait_for_job
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)
from training import cli

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("one_torch_thread")]

WORDS = ["cat", "dog", "sun", "tree", "moon", "fish", "bird", "star", "rain", "snow", "wind", "leaf"]


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, lm_backbone):  # noqa: F811
    return server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                                ready_timeout_s=600,
                                env={"TASKSWAP_LM_BACKBONES": json.dumps([{"name": "lm",
                                                                           "source": str(tiny_dir / "lm")}])})


def write_jsonl(path, words, chat=False):
    rows = [{"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": w.upper()}]}
            if chat else {"prompt": w, "completion": w.upper()} for w in words]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_trained_chat_lora_serves_the_reported_text_and_evaluates_the_same_over_http(
        srv, tiny_dir, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", WORDS * 3, chat=True)
    val = write_jsonl(tmp_path / "val.jsonl", WORDS[:4], chat=True)
    test = write_jsonl(tmp_path / "test.jsonl", WORDS[6:], chat=True)
    out = tmp_path / "up"
    code = cli.main(["train", "--task-type", "generation", "--method", "lora", "--name", "up",
                     "--data", str(train), "--val-data", str(val), "--test-data", str(test),
                     "--backbone", str(tiny_dir / "lm"), "--prompt-format", "chat", "--max-new-tokens", "8",
                     "--epochs", "6", "--lr", "0.01", "--batch-size", "4", "--out", str(out), "--quiet",
                     "--register", srv.url, "--token", srv.admin])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "registered up version" in printed.out
    reported = json.loads((out / "metrics.json").read_text())
    for word, text in zip(WORDS[6:], reported["outputs"]["test"]):
        r = srv.post("/v1/chat/completions", json={"model": "up", "max_tokens": 8, "temperature": 0,
                                                   "messages": [{"role": "user", "content": word}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == text
    served, local = tmp_path / "served.json", tmp_path / "local.json"
    assert cli.main(["evaluate", "--url", srv.url, "--task", "up", "--token", srv.admin, "--data", str(test),
                     "--max-new-tokens", "8", "--json", str(served)]) == 0
    assert cli.main(["evaluate", str(out), "--data", str(test), "--backbone", str(tiny_dir / "lm"),
                     "--max-new-tokens", "8", "--json", str(local)]) == 0
    s, l_ = json.loads(served.read_text()), json.loads(local.read_text())
    assert s["outputs"] == l_["outputs"] == reported["outputs"]["test"]
    assert {k: s[k] for k in ("chrf", "bleu", "exact_match", "token_f1")} == \
        {k: reported["metrics"]["test"][k] for k in ("chrf", "bleu", "exact_match", "token_f1")}


def wait(srv, job, timeout_s=300):
    return wait_for_job(srv, job["id"], timeout_s, interval_s=0.5)


def test_fit_job_trains_a_generation_lora_and_serves_it(srv):
    body = {"examples": [{"prompt": w, "completion": w.upper()} for w in WORDS * 2],
            "generation": {"prompt_template": "{input}=", "max_new_tokens": 8},
            "options": {"epochs": 2, "lr": 0.01}}
    r = srv.post("/adapters/upjob/fit", admin=True, json=body)
    assert r.status_code == 202, r.text
    job = wait(srv, r.json())
    assert job["status"] == "succeeded", job
    shown = srv.get("/adapters/upjob", admin=True).json()
    assert (shown["kind"], shown["task_type"]) == ("lora", "generation")
    assert "val_chrf" in job["result"]["metrics"]
    c = srv.post("/v1/completions", json={"model": "upjob", "prompt": "cat", "max_tokens": 4})
    assert c.status_code == 200, c.text


@pytest.mark.parametrize("body, words", [
    ({"examples": [{"prompt": "a"}, {"prompt": "b", "completion": "c"}]}, "completion"),
    ({"examples": [{"prompt": "a", "completion": "b"}] * 2, "labels": ["x", "y"]}, "omit 'labels'"),
    ({"examples": [{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}] * 2},
     "assistant"),
    ({"texts": ["a", "b"], "labels": ["x", "y"], "generation": {"max_new_tokens": 4}}, "'generation' settings"),
    ({"examples": [{"prompt": "a", "completion": "b"}] * 2, "generation": {"prompt_template": "no slot"}},
     "{input}"),
])
def test_bad_generation_fit_bodies_are_refused_naming_the_problem(srv, body, words):
    r = srv.post("/adapters/badgen/fit", admin=True, json=body)
    assert r.status_code in (400, 422), r.text
    assert words in r.text
