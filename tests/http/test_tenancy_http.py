"""Many teams on one server, over real HTTP (``bentoml serve`` subprocesses on loopback):
qualified task names on every route kind, scoped tokens (admin API and CLI), the 404 rule
walked over every route of the OpenAPI document, the audit log, two replicas converging
on a revocation, and a store written in the layout of before namespaces served unchanged.
"""

from __future__ import annotations

import io
import json
import re
import time
from datetime import datetime, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image

from adapters.format.adapter_dir import content_hash
from adapters.format.archive import make_archive
from support.factories import head_adapter
from support.replica_helpers import wait_for
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)
from training.cli import main as cli_main

pytestmark = pytest.mark.server

INFER = "i" * 32  # the bootstrap inference token: reads need a token, so namespaces isolate reads
HIDDEN, MISSING, SIBLING = "team/sent", "team/nothere", "team/other"
V2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["good"]}]}


def _archive(folder, backbone, name, seed=0) -> bytes:
    return make_archive(head_adapter(folder, backbone, name, seed=seed), "zip")


def _token(srv, role, namespaces, name="t") -> dict:
    r = srv.post("/admin/tokens", admin=True, json={"name": name, "role": role, "namespaces": namespaces})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token"].startswith(f"tsw_{body['id']}_") and "hash" not in body and "salt" not in body
    return body


@pytest.fixture(scope="module")
def idp_key():
    """The identity provider's signing key (this test is the provider)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, text_backbone, tmp_path_factory, idp_key):
    keys = tmp_path_factory.mktemp("idp")
    (keys / "idp.pem").write_bytes(idp_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return server_factory.start(store=tmp_path_factory.mktemp("tenancy-store"),
                                backbones=tiny_backbones_env(tiny_dir),
                                env={"TASKSWAP_INFERENCE_TOKEN": INFER, "TASKSWAP_TOKEN_TTL_S": "1",
                                     "TASKSWAP_JWT_PUBLIC_KEY_FILE": str(keys / "idp.pem"),
                                     "TASKSWAP_JWT_AUDIENCE": "taskswap"})


@pytest.fixture(scope="module")
def world(srv, text_backbone, tmp_path_factory):
    """team/sent and team/other (namespace team), plain (default); tokens for team and other."""
    tmp = tmp_path_factory.mktemp("tenancy-adapters")
    versions = {}
    for seed, name in enumerate([HIDDEN, SIBLING, "plain"]):
        r = srv.register_archive(_archive(tmp / name.replace("/", "-"), text_backbone, "x", seed), name=name)
        assert r.status_code == 201, r.text
        versions[name] = r.json()["version"]
    tokens = {"reg_team": _token(srv, "register", ["team"]), "adm_team": _token(srv, "admin", ["team"]),
              "inf_other": _token(srv, "infer", ["other"]), "reg_other": _token(srv, "register", ["other"])}
    return {"versions": versions, "tokens": tokens, "tmp": tmp}


def _bearer(world, who) -> str:
    return world["tokens"][who]["token"]


# ---- 1. qualified names on every route kind -------------------------------------------------
def test_every_route_kind_takes_a_qualified_name(srv, world):
    v = world["versions"][HIDDEN]
    tok = _bearer(world, "reg_team")
    r = srv.predict(HIDDEN, texts=["good"], token=tok)
    assert r.status_code == 200 and r.json()["results"][0]["version"] == v, r.text
    assert srv.predict([HIDDEN, "plain"], texts=["good"]).status_code == 200  # bootstrap inference: all
    assert srv.get(f"/adapters/{HIDDEN}", token=tok).json()["name"] == HIDDEN
    assert srv.get(f"/adapters/{HIDDEN}/rollout", token=tok).json()["task"] == HIDDEN
    assert srv.post(f"/adapters/{HIDDEN}/pin", token=tok).json()["name"] == HIDDEN
    assert srv.post(f"/adapters/{HIDDEN}/activate", token=tok, json={"version": v}).json()["active_version"] == v
    for path in (f"/v2/models/{HIDDEN}", f"/v2/models/{HIDDEN}/versions/{v[:12]}"):
        assert srv.get(path, token=tok).json()["name"] == HIDDEN
        assert srv.get(f"{path}/ready", token=tok).json()["ready"] is True
        r = srv.post(f"{path}/infer", token=tok, json=V2)
        assert r.status_code == 200 and r.json()["model_name"] == HIDDEN, r.text
    listing = srv.get("/adapters", token=tok).json()
    assert [a["name"] for a in listing["adapters"]] == [SIBLING, HIDDEN] and listing["total"] == 2
    # URL words cannot be a namespaced task's name, so '/adapters/team/rollout' is unambiguous
    r = srv.get("/adapters/team/rollout", token=tok)
    assert r.status_code == 404 and "'team'" in r.json()["message"]
    assert srv.get("/adapters/a/b/c", admin=True).status_code == 400  # at most one '/'
    assert srv.get("/adapters/a/b/c", token=tok).status_code == 404  # namespace 'a' is not its own
    # the default namespace keeps its bare names; 'default/x' is refused with the fix
    assert srv.get("/adapters/plain").json()["name"] == "plain"
    r = srv.get("/adapters/default/plain", admin=True)
    assert r.status_code == 400 and "written bare" in r.json()["message"]


def test_qualified_names_in_bodies_openai_tgi(srv, world):
    """OpenAI's ``model`` and TGI's ``adapter_id`` take 'team/task'; without a language model
    they refuse it with the same answer as any scoring task (the route exists, the name parses)."""
    tok = _bearer(world, "reg_team")
    a = srv.post("/v1/completions", token=tok, json={"model": HIDDEN, "prompt": "x"})
    b = srv.post("/generate", token=tok, json={"inputs": "x", "parameters": {"adapter_id": f"{HIDDEN}@{world['versions'][HIDDEN][:12]}"}})
    assert a.status_code in (400, 404, 422) and b.status_code in (400, 404, 422), (a.text, b.text)
    assert "is not registered" not in a.text + b.text  # the task was found, then refused for its kind


# ---- 2. scoped tokens ---------------------------------------------------------------------
def test_roles_and_namespaces(srv, world, text_backbone):
    tmp, reg = world["tmp"], _bearer(world, "reg_team")
    # register in its namespace, by the manifest's name (no form field): allowed
    r = srv.post("/adapters", token=reg, files={"file": ("a.zip", _archive(tmp / "m1", text_backbone, "team/by-manifest"))})
    assert r.status_code == 201 and r.json()["name"] == "team/by-manifest", r.text
    # outside it: by the manifest's name or the form's, the 404 of a missing task; nothing stored
    for fields in ({}, {"name": "other/evil"}):
        r = srv.post("/adapters", token=reg, data=fields,
                     files={"file": ("a.zip", _archive(tmp / f"m2{len(fields)}", text_backbone, "other/evil"))})
        assert r.status_code == 404 and r.json()["message"] == "task 'other/evil' is not registered", r.text
    assert srv.get("/adapters/other/evil", admin=True).status_code == 404
    # by store path: another namespace's stored version is not its to read (however written)
    v = world["versions"][HIDDEN]
    for path in (f"ns/team/tasks/sent/versions/{v}", f"./ns//team/tasks/sent/versions/{v}/.", "ns/team"):
        r = srv.post("/adapters", token=_bearer(world, "reg_other"), json={"store_path": path, "name": "other/copy"})
        missing = path.replace("sent", "nothere").replace(v, "ab" * 32)
        same = srv.post("/adapters", token=_bearer(world, "reg_other"), json={"store_path": missing, "name": "other/copy"})
        assert r.status_code == same.status_code == 404, (path, r.text, same.text)
        assert r.json()["message"].replace("sent", "N") == same.json()["message"].replace("nothere", "N"), (r.text, same.text)
    assert srv.get("/adapters/other/copy", admin=True).status_code == 404
    r = srv.delete("/adapters/plain", token=reg)  # the default namespace is another namespace
    assert r.status_code == 404 and r.json()["message"] == "task 'plain' is not registered"
    # infer may read its namespace but not change it: 403 (it can see the task anyway)
    inf_team = _token(srv, "infer", ["team"])["token"]
    assert srv.predict(HIDDEN, texts=["good"], token=inf_team).status_code == 200
    r = srv.post(f"/adapters/{HIDDEN}/pin", token=inf_team)
    assert r.status_code == 403 and "'register' is needed" in r.json()["message"]
    assert srv.get("/admin/tokens", token=reg).status_code == 403
    assert srv.delete("/adapters/team/by-manifest", token=reg).status_code == 200


def test_admin_of_a_namespace_manages_only_its_tokens(srv, world):
    adm = _bearer(world, "adm_team")
    r = srv.post("/admin/tokens", token=adm, json={"name": "x", "role": "infer", "namespaces": ["other"]})
    assert r.status_code == 403
    r = srv.post("/admin/tokens", token=adm, json={"name": "x", "role": "infer", "namespaces": ["*"]})
    assert r.status_code == 403
    listed = srv.get("/admin/tokens", token=adm).json()["tokens"]
    assert {t["id"] for t in listed} >= {world["tokens"]["reg_team"]["id"], world["tokens"]["adm_team"]["id"]}
    assert all(t["namespaces"] == ["team"] for t in listed) and all("token" not in t for t in listed)
    other_id = world["tokens"]["inf_other"]["id"]
    assert srv.post(f"/admin/tokens/{other_id}/rotate", token=adm).status_code == 404  # not its to see
    assert srv.delete(f"/admin/tokens/{other_id}", token=adm).status_code == 404
    r = srv.post("/admin/tokens", admin=True, json={"name": "x", "role": "owner", "namespaces": []})
    assert r.status_code == 422


def test_rotate_and_revoke(srv, world):
    adm = _bearer(world, "adm_team")
    made = _token(srv, "infer", ["team"])
    old = made["token"]
    assert srv.predict(HIDDEN, texts=["good"], token=old).status_code == 200
    r = srv.post(f"/admin/tokens/{made['id']}/rotate", token=adm)
    assert r.status_code == 200 and r.json()["rotated_at"], r.text
    new = r.json()["token"]
    assert new != old and new.startswith(f"tsw_{made['id']}_")
    assert srv.predict(HIDDEN, texts=["good"], token=old).status_code == 401  # this replica: at once
    assert srv.predict(HIDDEN, texts=["good"], token=new).status_code == 200
    assert srv.delete(f"/admin/tokens/{made['id']}", token=adm).json()["revoked_at"]
    assert srv.predict(HIDDEN, texts=["good"], token=new).status_code == 401
    assert srv.post(f"/admin/tokens/{made['id']}/rotate", token=adm).status_code == 404  # revoked: gone
    forged = f"tsw_{made['id']}_{'A' * 43}"
    assert srv.predict(HIDDEN, texts=["good"], token=forged).status_code == 401


def test_jwts_from_an_identity_provider(srv, world, idp_key):
    def signed(key, **grant):
        return jwt.encode({"sub": "ci@team", "aud": "taskswap", "exp": int(time.time()) + 300,
                           "taskswap": grant}, key, algorithm="RS256")
    good = signed(idp_key, role="register", namespaces=["team"])
    r = srv.post(f"/adapters/{HIDDEN}/pin", token=good, json={"pinned": False})
    assert r.status_code == 200, r.text
    assert srv.get("/admin/audit", admin=True, params={"limit": 1000}).json()["records"][-1]["who"] == "jwt:ci@team"
    r = srv.delete("/adapters/plain", token=good)
    assert r.status_code == 404 and r.json()["message"] == "task 'plain' is not registered"
    forged = signed(rsa.generate_private_key(public_exponent=65537, key_size=2048), role="admin", namespaces=["*"])
    assert srv.get("/admin/tokens", token=forged).status_code == 401


def test_bootstrap_tokens_work_as_before(srv):
    assert srv.predict("plain", texts=["good"]).status_code == 200  # the inference token
    r = srv.post("/adapters/plain/pin", token=INFER)
    assert r.status_code == 403 and "inference token cannot change" in r.json()["message"]
    assert srv.get("/adapters", token="wrong").status_code == 401
    assert srv.get("/adapters").status_code == 200


def test_cli_tokens(srv, capsys):
    base = ["tokens", "--url", srv.url, "--token", srv.admin]
    assert cli_main([*base, "create", "--name", "cli", "--role", "infer", "--namespace", "team",
                     "--namespace", "team2"]) == 0
    out = capsys.readouterr().out
    token = re.search(r"token \(shown once, store it now\): (tsw_\S+)", out).group(1)
    token_id = token.split("_")[1]
    assert srv.predict(HIDDEN, texts=["good"], token=token).status_code == 200
    assert cli_main([*base, "list"]) == 0
    assert re.search(rf"^{token_id}\tinfer\tteam,team2\tactive\tcli$", capsys.readouterr().out, re.M)
    assert cli_main([*base, "--json", "rotate", token_id]) == 0
    rotated = json.loads(capsys.readouterr().out)["token"]
    assert cli_main([*base, "revoke", token_id]) == 0
    assert "revoked" in capsys.readouterr().out
    assert srv.predict(HIDDEN, texts=["good"], token=rotated).status_code == 401
    assert cli_main([*base, "revoke", token_id]) == 2  # already revoked: a 404
    assert "does not exist" in capsys.readouterr().err


# ---- 3. the 404 rule on every route of the OpenAPI document ---------------------------------
# BentoML's own routes outside the mounted app: probes and the Prometheus scrape (task
# labels there are an operator's view; see SECURITY.md).
_INFRA = {"/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/schema.json"}
_BODIES = {  # a body naming the task, for routes whose task sits in the body
    ("POST", "/predict"): lambda n, v: {"json": {"task": n, "texts": ["good"]}},
    ("POST", "/predict/upload"): lambda n, v: {"data": {"task": n}, "files": {"files": ("a.png", _png())}},
    ("POST", "/v1/completions"): lambda n, v: {"json": {"model": n, "prompt": "x"}},
    ("POST", "/v1/chat/completions"): lambda n, v: {"json": {"model": n, "messages": [{"role": "user", "content": "x"}]}},
    ("POST", "/v1/embeddings"): lambda n, v: {"json": {"model": n, "input": "x"}},
    ("POST", "/generate"): lambda n, v: {"json": {"inputs": "x", "parameters": {"adapter_id": n}}},
    ("POST", "/generate_stream"): lambda n, v: {"json": {"inputs": "x", "parameters": {"adapter_id": n}}},
    ("POST", "/embed"): lambda n, v: {"json": {"texts": ["x"]}},  # names no task: answers 200
}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


def _call(srv, method, template, name, version, token, tmp, backbone):
    path = (template.replace("{name}", name).replace("{task}", name).replace("{model}", name)
            .replace("{version}", version[:12]).replace("{job_id}", "0" * 32).replace("{token_id}", "0" * 16))
    kw = _BODIES.get((method, template), lambda n, v: {})(name, version)
    if (method, template) == ("POST", "/adapters"):
        kw = {"data": {"name": name}, "files": {"file": ("a.zip", _archive(tmp / name.replace("/", "-"), backbone, "x"))}}
    elif method == "POST" and "json" not in kw and "files" not in kw:
        kw = {"json": V2 if template.startswith("/v2/") else {"version": version, "mode": "shadow", "texts": ["a"], "labels": ["b"]}}
    return srv.request(method, path, token=token, **kw)


@pytest.mark.parametrize("caller", ["inf_other", "reg_other"])
def test_every_route_hides_another_namespace(srv, world, caller, text_backbone):
    """Every route of /docs.json, called by a token of namespace 'other' about team/sent (which
    exists) and team/nothere (which does not): the same status (403 or 404) and the same body
    but for the name; no answer names team/sent unasked or lists team's other task."""
    token, version = _bearer(world, caller), world["versions"][HIDDEN]
    spec = srv.get("/docs.json").json()
    walked = []
    for template, ops in sorted(spec["paths"].items()):
        if template in _INFRA:
            continue
        for method in sorted(m.upper() for m in ops if m in ("get", "post", "delete")):
            walked.append(f"{method} {template}")
            names_a_task = any(p in template for p in ("{name}", "{task}", "{model}")) or \
                ((method, template) in _BODIES and template != "/embed") or (method, template) == ("POST", "/adapters")
            hidden = _call(srv, method, template, HIDDEN, version, token, world["tmp"], text_backbone)
            assert SIBLING not in hidden.text, f"{method} {template}: {hidden.text[:300]}"
            if not names_a_task:
                assert HIDDEN not in hidden.text, f"{method} {template} mentions {HIDDEN}: {hidden.text[:300]}"
                continue
            missing = _call(srv, method, template, MISSING, version, token, world["tmp"], text_backbone)
            assert hidden.status_code == missing.status_code, f"{method} {template}: {hidden.status_code} vs {missing.status_code}"
            assert hidden.text.replace(HIDDEN, "N") == missing.text.replace(MISSING, "N"), \
                f"{method} {template}: {hidden.text[:300]} vs {missing.text[:300]}"
            if "{" in template or (method, template) == ("POST", "/adapters"):
                assert hidden.status_code in (403, 404), f"{method} {template}: {hidden.status_code} {hidden.text[:200]}"
            else:
                assert hidden.status_code in (400, 403, 404, 422), f"{method} {template}: {hidden.status_code}"
    assert {"GET /adapters/{name}", "POST /v2/models/{task}/infer", "GET /v1/models/{model}",
            "POST /predict", "POST /admin/tokens", "GET /admin/audit"} <= set(walked)
    assert srv.get(f"/adapters/{HIDDEN}", admin=True).status_code == 200  # it was there all along
    # listings show only readable namespaces
    for path, key in (("/adapters", "adapters"), ("/v1/models", "data")):
        body = srv.get(path, token=token).json()
        assert not [x for x in body[key] if str(x.get("name", x.get("id", ""))).startswith("team/")], body


def test_jobs_belong_to_their_namespace(srv, world):
    texts = [f"good {i}" for i in range(6)] + [f"bad {i}" for i in range(6)]
    r = srv.post(f"/adapters/{SIBLING}/fit", token=_bearer(world, "reg_team"),
                 json={"texts": texts, "labels": ["pos"] * 6 + ["neg"] * 6, "promote": "shadow"})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    assert srv.get(f"/jobs/{job}", token=_bearer(world, "reg_team")).status_code == 200
    hidden = srv.get(f"/jobs/{job}", token=_bearer(world, "reg_other"))
    missing = srv.get(f"/jobs/{'0' * 32}", token=_bearer(world, "reg_other"))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["message"].replace(job, "J") == missing.json()["message"].replace("0" * 32, "J")


# ---- 4. the audit log -----------------------------------------------------------------------
def test_audit_log_records_admin_actions(srv, world):
    start = datetime.now(timezone.utc).isoformat()
    v = world["versions"][SIBLING]
    reg = _bearer(world, "reg_team")
    assert srv.post(f"/adapters/{SIBLING}/activate", token=reg, json={"version": v}).status_code == 200
    assert srv.post(f"/adapters/{SIBLING}/pin", token=reg, json={"pinned": False}).status_code == 200
    page = srv.get("/admin/audit", admin=True, params={"since": start}).json()["records"]
    assert [(r["what"], r["task"], r["who"], r["before"], r["after"]) for r in page] == [
        ("activate", SIBLING, world["tokens"]["reg_team"]["id"], v, v),
        ("pin", SIBLING, world["tokens"]["reg_team"]["id"], None, v)]
    everything = srv.get("/admin/audit", admin=True, params={"limit": 1000}).json()["records"]
    whats = {r["what"] for r in everything}
    assert {"register", "token_create", "activate", "pin", "delete", "fit"} <= whats
    first = [r for r in everything if r["what"] == "register" and r["task"] == HIDDEN][0]
    assert (first["who"], first["namespace"], first["before"], first["after"]) == \
        ("bootstrap-admin", "team", None, world["versions"][HIDDEN])
    # a namespace's admin reads its namespace's records only; filters and pages
    mine = srv.get("/admin/audit", token=_bearer(world, "adm_team"), params={"limit": 1000}).json()["records"]
    assert mine and {r["namespace"] for r in mine} == {"team"}
    assert srv.get("/admin/audit", admin=True, params={"namespace": "default"}).json()["records"][0]["task"] == "plain"
    seen, after = [], None
    for _ in range(100):
        body = srv.get("/admin/audit", admin=True, params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += body["records"]
        after = body["next_after"]
        if after is None:
            break
    assert [r["id"] for r in seen] == [r["id"] for r in srv.get("/admin/audit", admin=True, params={"limit": 1000}).json()["records"]]
    assert srv.get("/admin/audit", admin=True, params={"since": "yesterday"}).status_code == 400
    assert srv.get("/admin/audit", token=_bearer(world, "reg_team")).status_code == 403


# ---- 5. two replicas on one store -----------------------------------------------------------
def test_a_second_replica_sees_tokens_and_revocations(srv, world, server_factory, tiny_dir):
    other = server_factory.start(store=srv.store, backbones=tiny_backbones_env(tiny_dir), admin_token=srv.admin,
                                 env={"TASKSWAP_INFERENCE_TOKEN": INFER, "TASKSWAP_TOKEN_TTL_S": "1"})
    made = _token(srv, "infer", ["team"])
    wait_for(lambda: other.predict(HIDDEN, texts=["good"], token=made["token"]).status_code == 200,
             "B accepts a token created on A", timeout_s=30, interval_s=0.2)
    assert srv.delete(f"/admin/tokens/{made['id']}", admin=True).status_code == 200
    t0 = time.monotonic()
    wait_for(lambda: other.predict(HIDDEN, texts=["good"], token=made["token"]).status_code == 401,
             "B refuses a token revoked on A", timeout_s=30, interval_s=0.2)
    print(f"revocation seen by the other replica after {time.monotonic() - t0:.2f} s (TTL 1 s)")
    assert other.predict(HIDDEN, texts=["good"], token=_bearer(world, "reg_team")).status_code == 200
    other.stop()


# ---- 6. a store written before namespaces ---------------------------------------------------
def test_a_store_in_the_layout_of_before_is_served_unchanged(server_factory, tiny_dir, text_backbone, tmp_path):
    """The store is written by hand in the on-disk layout of the version before namespaces
    (tasks/<name>/alias.json, tasks/<name>/versions/<sha256>/, a bare-integer generation
    file), not through the store code, and a server of this version serves it."""
    store = tmp_path / "old-store"
    folder = head_adapter(tmp_path / "src", text_backbone, "legacy", seed=5)
    version = content_hash(folder)
    target = store / "tasks" / "legacy" / "versions" / version
    target.mkdir(parents=True)
    for p in folder.iterdir():
        (target / p.name).write_bytes(p.read_bytes())
    now = datetime.now(timezone.utc).isoformat()
    (store / "tasks" / "legacy" / "alias.json").write_text(json.dumps({
        "name": "legacy", "active": version, "updated_at": now,
        "versions": [{"version": version, "kind": "head", "created_at": now, "labels": ["neg", "pos"]}]}))
    (store / "generation").write_text("1")
    old = server_factory.start(store=store, backbones=tiny_backbones_env(tiny_dir))
    r = old.predict("legacy", texts=["good"])
    assert r.status_code == 200 and r.json()["results"][0]["version"] == version, r.text
    assert [a["name"] for a in old.get("/adapters").json()["adapters"]] == ["legacy"]
    assert old.get("/v2/models/legacy/ready").json()["ready"] is True
    old.stop()


# ---- quotas across namespaces -----------------------------------------------------------------
def test_quotas_per_namespace_and_who_may_set_them(srv, world, text_backbone):
    quota, tmp = "/admin/namespaces/team/quota", world["tmp"]
    adm_team = _bearer(world, "adm_team")
    # a team's own admin reads its quota but cannot set or clear one (its limits, its weight)
    r = srv.request("PUT", quota, token=adm_team, json={"weight": 100})
    assert r.status_code == 403 and "every namespace" in r.json()["message"], r.text
    assert srv.get("/admin/namespaces/other/quota", token=adm_team).status_code == 403
    r = srv.request("PUT", quota, admin=True, json={})
    held = r.json()["usage"]["tasks"]
    assert r.status_code == 200 and held >= 2, r.text  # team/sent, team/other at least
    r = srv.request("PUT", quota, admin=True, json={"max_tasks": held})  # full
    try:
        assert srv.get(quota, token=adm_team).json()["quota"]["max_tasks"] == held
        r = srv.register_archive(_archive(tmp / "q-team", text_backbone, "x"), name="team/third")
        assert r.status_code == 403 and "max_tasks" in r.text, r.text
        assert srv.get("/adapters/team/third", admin=True).status_code == 404  # nothing half-registered
        # another namespace is not limited by team's quota
        r = srv.register_archive(_archive(tmp / "q-other", text_backbone, "x"), name="other/first")
        assert r.status_code == 201, r.text
        assert srv.delete("/adapters/other/first", admin=True).status_code == 200
        audit = srv.get("/admin/audit", admin=True, params={"namespace": "team"}).json()
        assert any(rec["what"] == "quota-set" for rec in audit["records"]), audit
    finally:
        assert srv.delete(quota, admin=True).status_code == 200
