"""Shared adaptation sets over HTTP on the real server: list, show (versions and the tasks
riding on each), register a new set version (the adaptation's archive + new heads), activate
a set version and roll back, all or none; the namespaces' 404 rule and roles; audit records;
a rollback while requests flow fails none of them; deleting a task never deletes the
adaptation another task uses."""

from __future__ import annotations

import threading
import time

import pytest

from adapters.format.archive import make_archive
from support.http_helpers import assert_error, predict_ok, register_ok
from support.multitask_factories import multitask_task_dir, shared_lora_dir
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixtures)
from taskswap_client import SharedSetInfo

pytestmark = pytest.mark.server

TEXTS = ["good movie", "the plot was awful and boring", "fun fun fun"]
TASKS = {"st-sentiment": ("neg", "pos"), "st-topic": ("film", "food", "news")}


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory):
    # an inference token: reads need a token, so namespaces isolate reads
    return server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                                env={"TASKSWAP_INFERENCE_TOKEN": "i" * 32})


def zipped(folder) -> bytes:
    return make_archive(folder, "zip")


def register_set(srv, base_dir, heads=(), token=None):
    files = [("file", ("base.zip", zipped(base_dir)))] + [("heads", (f"h{i}.zip", zipped(h))) for i, h in enumerate(heads)]
    return srv.post("/shared-sets", admin=token is None, token=token, files=files)


def token(srv, role, namespaces) -> str:
    r = srv.post("/admin/tokens", admin=True, json={"name": "t", "role": role, "namespaces": namespaces})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def world(srv, tmp_path_factory, text_backbone):
    """``st-base`` with two tasks on it (version 1), then a second set version registered over
    HTTP with a new head for ``st-topic``; ``team/base`` with ``team/task`` in namespace team."""
    tmp = tmp_path_factory.mktemp("sets")
    v1 = register_ok(srv, shared_lora_dir(tmp / "b1", text_backbone, "st-base", seed=1))["version"]
    tasks1 = {t: register_ok(srv, multitask_task_dir(tmp / t, text_backbone, t, "st-base", None, labels,
                                                     seed=10 + i))["version"]
              for i, (t, labels) in enumerate(TASKS.items())}
    register_ok(srv, shared_lora_dir(tmp / "team-base", text_backbone, "team/base", seed=7))
    register_ok(srv, multitask_task_dir(tmp / "team-task", text_backbone, "team/task", "team/base", None, seed=8))
    listed = srv.get("/shared-sets").json()["sets"]
    head = multitask_task_dir(tmp / "new-topic", text_backbone, "st-topic", "st-base", v1, TASKS["st-topic"], seed=99)
    r = register_set(srv, shared_lora_dir(tmp / "b2", text_backbone, "st-base", seed=2), [head])
    assert r.status_code == 201, r.text
    return {"v1": v1, "tasks1": tasks1, "listed_before": listed, "registered": r.json(), "tmp": tmp}


def versions_answering(srv, tasks=tuple(TASKS)) -> dict[str, str]:
    body = predict_ok(srv, list(tasks), texts=TEXTS)
    return {r["task"]: r["version"] for r in body["results"]}


def test_list_and_show(srv, world):
    listed = {s["name"]: s for s in world["listed_before"]}
    assert listed["st-base"]["active"] == {"adaptation": world["v1"], "tasks": world["tasks1"]}
    assert listed["team/base"]["active"]["tasks"].keys() == {"team/task"}
    info = world["registered"]
    v2 = info["active"]["adaptation"]
    assert v2 != world["v1"] and info["previous"] == {"adaptation": world["v1"], "tasks": world["tasks1"]}
    assert info["pending"] is None
    assert [v["version"] for v in info["versions"]] == [world["v1"], v2]
    assert info["versions"][0]["tasks"] == world["tasks1"] and not info["versions"][0]["active"]
    assert info["versions"][1]["tasks"] == info["active"]["tasks"] and info["versions"][1]["active"]
    assert set(info["active"]["tasks"]) == set(TASKS)
    assert all(info["active"]["tasks"][t] != world["tasks1"][t] for t in TASKS)  # every task moved
    assert srv.get("/shared-sets/st-base").json() == info
    assert versions_answering(srv) == info["active"]["tasks"]


def test_errors_name_the_problem(srv, world, text_backbone):
    assert_error(srv.get("/shared-sets/st-none"), 404, "st-none", "not registered")
    assert_error(srv.get("/shared-sets/st-topic"), 404, "st-topic", "multitask")
    assert_error(srv.post("/shared-sets/st-base/activate", admin=True, json={"version": "0" * 12}), 404, "0" * 12)
    active = srv.get("/shared-sets/st-base").json()["active"]["adaptation"]
    assert_error(srv.post("/shared-sets/st-base/activate", admin=True, json={"version": active}), 409, "already")
    r = srv.post("/shared-sets/st-base/activate", admin=True, json={"version": "not-hex"})
    assert r.status_code == 422 and "version" in r.text
    r = srv.post("/shared-sets/st-base/activate", admin=True, json={"version": world["v1"], "x": 1})
    assert r.status_code == 422
    assert_error(srv.post("/shared-sets", admin=True, files={"heads": ("h.zip", b"x")}), 400, "file")
    assert_error(srv.post("/shared-sets", admin=True, data={"file": "base.zip"}, files={"heads": ("h.zip", b"x")}),
                 400, "multipart field 'file' (the shared adaptation's archive) is missing")
    assert_error(srv.post("/shared-sets", admin=True, files={"file": ("base.zip", b"")}), 400,
                 "an uploaded archive is empty")
    stray = multitask_task_dir(world["tmp"] / "stray", text_backbone, "st-stray", "st-base", None, seed=3)
    r = register_set(srv, shared_lora_dir(world["tmp"] / "b3", text_backbone, "st-base", seed=3), [stray])
    assert_error(r, 400, "st-stray", "do not ride on")
    r = register_set(srv, multitask_task_dir(world["tmp"] / "not-base", text_backbone, "st-topic", "st-base", None))
    assert_error(r, 400, "multitask", "shared adaptation")
    assert srv.get("/shared-sets/st-base").json()["active"]["adaptation"] == active  # nothing moved
    assert srv.internal_errors() == []


def test_roles_and_the_404_rule(srv, world, text_backbone):
    other = token(srv, "register", ["other"])
    infer_team, reg_team = token(srv, "infer", ["team"]), token(srv, "register", ["team"])
    missing = srv.get("/shared-sets/team/nope", token=other)
    hidden = srv.get("/shared-sets/team/base", token=other)
    assert hidden.status_code == missing.status_code == 404
    same = lambda r, name: r.text.replace(name, "X")  # noqa: E731
    assert same(hidden, "team/base") == same(missing, "team/nope")  # the same body, exists or not
    assert "team/base" not in {s["name"] for s in srv.get("/shared-sets", token=other).json()["sets"]}
    assert srv.get("/shared-sets/team/base", token=infer_team).status_code == 200
    assert_error(srv.post("/shared-sets/team/base/activate", token=infer_team, json={}), 403, "register")
    assert_error(srv.post("/shared-sets/team/base/activate", token=other, json={}), 404, "team/base")
    assert_error(srv.post("/shared-sets/st-base/activate", json={}, headers={"Authorization": ""}), 401, "token")
    r = register_set(srv, shared_lora_dir(world["tmp"] / "tb2", text_backbone, "team/base", seed=9), token=other)
    assert_error(r, 404, "team/base")
    # team's register token: the set has no previous version yet, so a rollback is a 409 naming it
    assert_error(srv.post("/shared-sets/team/base/activate", token=reg_team, json={}), 409, "no previous set")


def test_rollback_while_requests_flow(srv, world):
    info = srv.get("/shared-sets/st-base").json()
    new, old = info["active"], info["previous"]
    sets = [old["tasks"], new["tasks"]]
    answers, done = [], threading.Event()
    deadline = time.monotonic() + 120

    def predictor() -> None:
        with srv.new_client() as client:
            for _ in range(300):  # bounded in count and in time
                if done.is_set() or time.monotonic() > deadline:
                    return
                r = client.post("/predict", json={"tasks": list(TASKS), "texts": TEXTS})
                answers.append((r.status_code, r.json()))

    def wait_answers(n: int) -> None:
        target = len(answers) + n
        while len(answers) < target and time.monotonic() < deadline:
            time.sleep(0.02)

    threads = [threading.Thread(target=predictor) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            wait_answers(3)
            r = srv.post("/shared-sets/st-base/activate", admin=True, json={})  # rollback: the previous set
            assert r.status_code == 200, r.text
            assert r.json()["active"] == old and r.json()["previous"] == new
            wait_answers(3)
            r = srv.post("/shared-sets/st-base/activate", admin=True, json={"version": new["adaptation"][:12]})
            assert r.status_code == 200, r.text
            assert r.json()["active"] == new
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    failures = [(s, b) for s, b in answers if s != 200]
    assert failures == [] and len(answers) >= 12, failures[:3]
    for _, body in answers:  # each task answers from a version of one of the two sets
        for res in body["results"]:
            assert res["version"] in {s[res["task"]] for s in sets}, res
    wait_answers(0)
    assert versions_answering(srv) == new["tasks"]
    records = srv.get("/admin/audit", admin=True, params={"limit": 1000}).json()["records"]
    switched = [r for r in records if r["what"] == "shared_set_activate" and r["task"] == "st-base"]
    assert len(switched) >= 6 and switched[-1]["after"] == new["adaptation"]
    assert switched[-1]["detail"]["tasks"]["st-topic"] == {"before": old["tasks"]["st-topic"],
                                                           "after": new["tasks"]["st-topic"]}
    assert any(r["what"] == "shared_set_register" and r["task"] == "st-base" for r in records)


def test_deleting_a_task_keeps_the_adaptation_others_use(srv, world):
    info = srv.get("/shared-sets/st-base").json()
    assert srv.delete("/adapters/st-sentiment", admin=True).status_code == 200
    assert srv.get("/adapters/st-base").status_code == 200
    assert versions_answering(srv, ["st-topic"]) == {"st-topic": info["active"]["tasks"]["st-topic"]}
    assert_error(srv.delete("/adapters/st-base", admin=True), 409, "st-topic")
    shown = srv.get("/shared-sets/st-base").json()
    assert shown["active"]["tasks"].keys() == {"st-topic"}
    assert srv.internal_errors() == []


def test_the_sets_cli_lists_shows_registers_activates_and_rolls_back(srv, world, text_backbone, capsys,
                                                                      monkeypatch):
    """``taskswap sets ...`` through the typed client, on ``team/base`` (the URL from
    ``TASKSWAP_URL``, as the other sub-commands take it)."""
    from training.cli import main
    monkeypatch.setenv("TASKSWAP_URL", srv.url)
    tmp = world["tmp"]
    before = srv.get("/shared-sets/team/base").json()["active"]

    def run(*args) -> tuple[int, str, str]:
        code = main(["sets", "--token", srv.admin, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("list")
    assert code == 0 and any(line.split("\t")[:2] == ["team/base", before["adaptation"][:12]]
                             for line in out.splitlines()), out
    head = multitask_task_dir(tmp / "cli-head", text_backbone, "team/task", "team/base", before["adaptation"], seed=41)
    code, out, err = run("--json", "register", str(shared_lora_dir(tmp / "cli-base", text_backbone, "team/base",
                                                                   seed=40)), "--head", str(head))
    assert code == 0, err
    registered = SharedSetInfo.model_validate_json(out)
    assert registered.active.adaptation != before["adaptation"] and registered.previous.model_dump() == before
    assert srv.get("/shared-sets/team/base").json()["active"] == registered.active.model_dump()
    code, out, _ = run("show", "team/base")
    assert code == 0 and out.startswith(f"team/base: active {registered.active.adaptation[:12]}")
    assert f"previous {before['adaptation'][:12]}" in out and out.count("\n") >= 3  # record + two versions
    code, out, _ = run("rollback", "team/base")
    assert code == 0 and srv.get("/shared-sets/team/base").json()["active"] == before
    code, out, _ = run("activate", "team/base", registered.active.adaptation[:10])
    assert code == 0 and srv.get("/shared-sets/team/base").json()["active"] == registered.active.model_dump()
    code, _, err = run("activate", "team/base", "0" * 12)  # no such version: refused, nothing moves
    assert code == 2 and "0" * 12 in err
    code, _, err = run("show", "team/nothing")
    assert code == 2 and "404" in err
    code, _, err = run("register", str(tmp / "no-such-folder"))
    assert code == 2 and "no-such-folder" in err
    assert srv.get("/shared-sets/team/base").json()["active"] == registered.active.model_dump()
    code, _, err = run("--url", "http://127.0.0.1:9", "list")
    assert code == 1 and "cannot reach" in err
    assert srv.internal_errors() == []
