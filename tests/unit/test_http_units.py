"""The service's pieces that need no server: auth, settings, input limits, error mapping,
metric label capping. Fast; the real-server tests are in the other ``test_http_*`` modules."""

from __future__ import annotations

import io
import os
import warnings

import pytest
from PIL import Image
from pydantic import SecretStr, ValidationError

from adapters.errors import (CapacityError, Conflict, IncompatibleAdapter, InvalidAdapter, InvalidInput,
                             NotFound, Unauthorized)
from service.auth import Auth, scope_for
from service.errors import Forbidden, NotReady, PayloadTooLarge, status_for
from service.inputs import InputLimits, check_registration_fields, check_texts, decode_image
from service.metrics import TaskLabels
from service.settings import Settings

ADMIN, INFER = "a" * 20, "i" * 20


@pytest.mark.parametrize("admin,infer,scope,header,outcome", [
    # no tokens configured: reading is open, admin is refused (403), whatever is sent
    (None, None, "read", None, "ok"),
    (None, None, "admin", None, 403),
    (None, None, "admin", f"Bearer {ADMIN}", 403),
    # admin token only
    (ADMIN, None, "read", None, "ok"),
    (ADMIN, None, "admin", f"Bearer {ADMIN}", "ok"),
    (ADMIN, None, "admin", f"bearer {ADMIN}", "ok"),
    (ADMIN, None, "admin", None, 401),
    (ADMIN, None, "admin", "Bearer wrong-token-xxxxxxxx", 401),
    (ADMIN, None, "admin", f"Basic {ADMIN}", 401),
    (ADMIN, None, "admin", "Bearer ", 401),
    # both tokens
    (ADMIN, INFER, "read", None, 401),
    (ADMIN, INFER, "read", f"Bearer {INFER}", "ok"),
    (ADMIN, INFER, "read", f"Bearer {ADMIN}", "ok"),
    (ADMIN, INFER, "read", f"Bearer {INFER}x", 401),
    (ADMIN, INFER, "admin", f"Bearer {INFER}", 403),
    (ADMIN, INFER, "admin", f"Bearer {ADMIN}", "ok"),
    # health probes: open with or without tokens, whatever is sent
    (None, None, "open", None, "ok"),
    (ADMIN, INFER, "open", None, "ok"),
    (ADMIN, INFER, "open", "Bearer wrong-token-xxxxxxxx", "ok"),
])
def test_auth_matrix(admin, infer, scope, header, outcome):
    auth = Auth(SecretStr(admin) if admin else None, SecretStr(infer) if infer else None)
    if outcome == "ok":
        auth.require(scope, header)
        return
    with pytest.raises(Unauthorized) as info:
        auth.require(scope, header)
    assert status_for(info.value)[0] == outcome
    if admin is None and scope == "admin":
        assert "TASKSWAP_ADMIN_TOKEN" in info.value.message


@pytest.mark.parametrize("method,path,scope", [
    ("POST", "/adapters", "admin"), ("POST", "/adapters/", "admin"), ("GET", "/adapters", "read"),
    ("POST", "/adapters/x/activate", "admin"), ("POST", "/adapters/x/pin", "admin"),
    ("DELETE", "/adapters/x", "admin"), ("GET", "/adapters/x", "read"), ("POST", "/predict", "read"),
    ("POST", "/predict/upload", "read"), ("GET", "/backbones", "read"),
    ("GET", "/v2/health/live", "open"), ("GET", "/v2/health/ready", "open"), ("GET", "/v2", "read"),
    ("POST", "/v2/health/ready", "read"), ("GET", "/v2/health/ready/x", "read"),
    ("GET", "/v2/models/x", "read"), ("GET", "/v2/models/x/ready", "read"),
])
def test_admin_routes(method, path, scope):
    assert scope_for(method, path) == scope


@pytest.mark.parametrize("exc,status", [
    (NotFound("x"), 404), (InvalidInput("x"), 400), (InvalidAdapter("x"), 422),
    (IncompatibleAdapter("x"), 409), (Conflict("x"), 409), (CapacityError("x"), 429),
    (Unauthorized("x"), 401), (Forbidden("x"), 403), (PayloadTooLarge("x"), 413), (NotReady("x"), 503),
])
def test_error_mapping(exc, status):
    assert status_for(exc)[0] == status


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("TASKSWAP_BACKBONES", '[{"name": "t", "source": "/models/x", "max_length": 64}]')
    monkeypatch.setenv("TASKSWAP_ADMIN_TOKEN", " ")  # blank = unset
    monkeypatch.setenv("TASKSWAP_MAX_INPUTS", "8")
    s = Settings()
    assert s.admin_token is None and s.max_inputs == 8
    (spec,) = s.backbone_specs()
    assert (spec.name, spec.source, spec.max_length, spec.device) == ("t", "/models/x", 64, "auto")


def test_speed_settings_defaults_and_environment(monkeypatch):
    for var in ("TASKSWAP_TORCH_THREADS", "TASKSWAP_TOKEN_BUDGET", "TASKSWAP_MAX_FORWARD_ROWS"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert (s.torch_threads, s.token_budget, s.max_forward_rows) == (1, 512, 256)
    monkeypatch.setenv("TASKSWAP_TORCH_THREADS", "3")
    monkeypatch.setenv("TASKSWAP_TOKEN_BUDGET", "0")
    monkeypatch.setenv("TASKSWAP_MAX_FORWARD_ROWS", "16")
    s = Settings()
    assert (s.torch_threads, s.token_budget, s.max_forward_rows) == (3, 0, 16)


def test_adapter_budget_keeps_its_former_name_as_a_deprecated_alias(monkeypatch):
    for key in list(os.environ):
        if key.startswith("TASKSWAP_"):
            monkeypatch.delenv(key)
    assert Settings().adapter_budget_mb == 512 and Settings(adapter_budget_mb=64).adapter_budget_mb == 64
    monkeypatch.setenv("TASKSWAP_LORA_BUDGET_MB", "128")
    with pytest.warns(FutureWarning, match="TASKSWAP_LORA_BUDGET_MB is deprecated: set TASKSWAP_ADAPTER_BUDGET_MB"):
        assert Settings().adapter_budget_mb == 128
    monkeypatch.setenv("TASKSWAP_ADAPTER_BUDGET_MB", "256")  # the new name wins
    with pytest.warns(FutureWarning):
        assert Settings().adapter_budget_mb == 256
    monkeypatch.delenv("TASKSWAP_LORA_BUDGET_MB")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Settings().adapter_budget_mb == 256
    assert not [w for w in caught if "deprecated" in str(w.message)]


def test_default_backbones_are_the_embedded_ones():
    specs = {b.name: b for b in Settings().backbones}
    assert specs["text"].source == "embedded:all-MiniLM-L6-v2" and specs["text"].max_length == 128
    assert specs["vision"].source == "embedded:mobilenet_v2" and specs["vision"].image_size == 96


@pytest.mark.parametrize("kwargs,word", [
    ({"admin_token": "short"}, "16 characters"),
    ({"admin_token": ADMIN, "inference_token": ADMIN}, "must differ"),
    ({"backbones": [{"name": "a", "source": "x"}, {"name": "a", "source": "y"}]}, "unique"),
    ({"backbones": []}, "at least 1"),
    ({"backbones": [{"name": "a", "source": "x", "typo": 1}]}, "typo"),
    ({"max_batch_rows": 0}, "greater than or equal to 1"),
    ({"device": "gpu"}, "device"),
    ({"token_budget": -1}, "greater than or equal to 0"),
    ({"max_forward_rows": 0}, "greater than or equal to 1"),
    ({"torch_threads": 0}, "greater than or equal to 1"),
])
def test_settings_refused(kwargs, word):
    with pytest.raises(ValidationError) as info:
        Settings(**kwargs)
    assert word in str(info.value)


def test_texts_all_problems_at_once():
    with pytest.raises(InvalidInput) as info:
        check_texts(["ok", "", "x" * 11], InputLimits(max_text_chars=10))
    assert info.value.problems == ["texts[1] is empty", "texts[2] has 11 characters; at most 10 "
                                   "(TASKSWAP_MAX_TEXT_CHARS)"]


def test_only_common_image_formats_are_opened():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PCX")  # a format PIL reads, but not one we accept
    with pytest.raises(InvalidInput, match="not a decodable image"):
        decode_image(buf.getvalue(), "images[0]", InputLimits())
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"  # would run Ghostscript
    with pytest.raises(InvalidInput, match="not a decodable image"):
        decode_image(eps, "images[0]", InputLimits())
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), "x", InputLimits()).mode == "RGB"


@pytest.mark.parametrize("name,labels,word", [
    ("Bad Name", None, "task name"), (None, ["a", "a"], "unique"), (None, ["a", ""], "is empty"),
    (None, [], "non-empty"),
])
def test_registration_fields(name, labels, word):
    with pytest.raises(InvalidInput, match=word):
        check_registration_fields(name, labels)


def test_task_labels_are_capped_and_only_claimed_by_success():
    labels = TaskLabels(2)
    assert labels.label("typo-task") == "other"  # a failed request claims nothing
    assert [labels.label(t, claim=True) for t in ("a", "b", "c")] == ["a", "b", "other"]
    assert labels.label("a") == "a" and labels.label("c", claim=True) == "other"


def test_every_response_names_the_replica():
    """ReplicaHeader adds X-Taskswap-Replica to successes and errors alike."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from service.middleware import ReplicaHeader

    inner = Starlette(routes=[Route("/ok", lambda request: JSONResponse({"ok": True}))])
    client = TestClient(ReplicaHeader(inner, replica_id=lambda: "pod-a-17"))
    for path, status in [("/ok", 200), ("/missing", 404)]:
        r = client.get(path)
        assert (r.status_code, r.headers["x-taskswap-replica"]) == (status, "pod-a-17")


def test_adapter_list_page_filters_then_windows():
    from adapters.name_index import NameIndex
    idx = NameIndex()
    names = [f"t-{i:02d}" for i in range(7)] + ["other"]
    for n in reversed(names + names):  # any order, duplicates once
        idx.add(n)
    assert idx.window("T-0", 0, 3) == (names[:3], 7, 3)
    assert idx.window("t-0", 6, 3) == (names[6:7], 7, None)
    assert idx.window(None, 0, None) == (sorted(names), 8, None)
    assert idx.window("other", 0, 1) == (["other"], 1, None)
    assert idx.window(None, 20, 5) == ([], 8, None)
    idx.discard("t-03")
    idx.discard("t-03")  # gone already: nothing happens
    assert idx.window("t-", 2, 2) == (["t-02", "t-04"], 6, 4)
