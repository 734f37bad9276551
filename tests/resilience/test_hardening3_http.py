"""Hardening, round 3 (issue 30, items 2-7), over real HTTP (``bentoml serve``)."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

from adapters.backbones.base import load_backbone
from adapters.backbones.tiny import tiny_backbone_spec
from adapters.format.archive import make_archive
from support.factories import head_adapter, peft_lora_dir
from support.http_helpers import assert_error, png_bytes, wait_for_job
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone, vision_backbone):
    """One server, a text head task 'ok' and an image head task 'img'."""
    s = server_factory.start(store=tmp_path_factory.mktemp("store"),
                             backbones=tiny_backbones_env(tiny_dir))
    root = tmp_path_factory.mktemp("adapters")
    for name, bb in (("ok", text_backbone), ("img", vision_backbone)):
        r = s.register_archive(make_archive(head_adapter(root / name, bb, name)))
        assert r.status_code == 201, r.text
    return s


def _peft_with(folder: Path, backbone_path: str, **config) -> Path:
    peft_lora_dir(folder, backbone_path, r=4)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(config)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


# ---- item 2: a pattern key that would explode when compiled is a 422 naming it --------------
@pytest.mark.parametrize("field", ["rank_pattern", "alpha_pattern"])
@pytest.mark.parametrize("key", [r"(?:a{1000}){4000}", r"(a{65535}){65535}"])
def test_a_regex_compile_bomb_is_refused_naming_the_key(srv, tiny_dir, tmp_path, field, key):
    folder = _peft_with(tmp_path / "bomb", str(tiny_dir / "text"), **{field: {key: 4}})
    start = time.monotonic()
    r = srv.register_archive(make_archive(folder), name="bomb")
    body = assert_error(r, 422, field, key[:12], "unrolled")
    assert "Traceback" not in body["message"]
    assert time.monotonic() - start < 60  # refused before compiling: no 4 s / 3 GiB compile
    assert srv.get("/adapters/bomb").status_code == 404
    assert srv.predict("ok", texts=["still served"]).status_code == 200
    assert srv.internal_errors() == []


# ---- item 5: the same per-request limits on every inference route ----------------------------
LIMITS = {"TASKSWAP_MAX_INPUTS": "4", "TASKSWAP_MAX_TEXT_CHARS": "50",
          "TASKSWAP_MAX_IMAGE_PIXELS": "10000", "TASKSWAP_MAX_REQUEST_PIXELS": "15000",
          "TASKSWAP_MAX_AUDIO_SECONDS": "1.0"}


def _wav(seconds: float) -> bytes:
    sf = pytest.importorskip("soundfile")
    t = np.arange(int(seconds * 16000)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# modality -> (task, backbone, request field, v2 input name)
MODALITIES = {"text": ("ok", "text", "texts", "text"), "image": ("img", "vision", "images", "image"),
              "audio": ("sounds", "audio", "audio", "audio")}
# limit -> (modality, the inputs past it, words the message names)
OVER = {
    "inputs per request": ("text", lambda: ["a"] * 5, ["5", "at most 4"]),
    "text characters": ("text", lambda: ["x" * 60], ["50"]),
    "pixels per image": ("image", lambda: [png_bytes(size=(120, 100))], ["12000 pixels", "TASKSWAP_MAX_IMAGE_PIXELS"]),
    "pixels per request": ("image", lambda: [png_bytes(size=(100, 90))] * 2, ["18000 pixels", "TASKSWAP_MAX_REQUEST_PIXELS"]),
    "audio seconds per clip": ("audio", lambda: [_wav(1.5)], ["at most 1 s"]),
    "image inputs per request": ("image", lambda: [png_bytes(size=(8, 8))] * 5, ["at most 4"]),
}


def _route_request(route: str, modality: str, inputs: list, version: str):
    """(method args) of one request carrying ``inputs`` on ``route``."""
    task, backbone, field, v2_name = MODALITIES[modality]
    items = inputs if modality == "text" else [_b64(x) for x in inputs]
    v2 = {"inputs": [{"name": v2_name, "shape": [len(items)], "datatype": "BYTES", "data": items}]}
    return {
        "predict": ("/predict", {"json": {"task": task, field: items}}),
        "predict/upload": ("/predict/upload", {"data": {"task": task}, "files": [
            ("files", (f"f{i}", x)) for i, x in enumerate(inputs)]}),
        "embed": ("/embed", {"json": {"backbone": backbone, field: items}}),
        "v1/embeddings": ("/v1/embeddings", {"json": {"model": backbone, "input": items}}),
        "v2 infer": (f"/v2/models/{task}/infer", {"json": v2}),
        "v2 versioned infer": (f"/v2/models/{task}/versions/{version}/infer", {"json": v2}),
    }[route]


ROUTES = ["predict", "predict/upload", "embed", "v1/embeddings", "v2 infer", "v2 versioned infer"]


@pytest.fixture(scope="module")
def limited(server_factory, tiny_dir, tmp_path_factory, text_backbone, vision_backbone):
    """A server with small input limits and a head task per modality (text, image, audio)."""
    spec = tiny_backbone_spec("audio", tmp_path_factory.mktemp("tiny-audio") / "a")
    audio_bb = load_backbone(spec)
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), env=LIMITS, backbones=[
        *tiny_backbones_env(tiny_dir), {"name": spec.name, "source": spec.source}])
    root = tmp_path_factory.mktemp("adapters")
    versions = {}
    for name, bb in (("ok", text_backbone), ("img", vision_backbone), ("sounds", audio_bb)):
        r = s.register_archive(make_archive(head_adapter(root / name, bb, name)))
        assert r.status_code == 201, r.text
        versions[name] = r.json()["version"]
    return s, versions


def _message(r) -> str:
    body = r.json()
    err = body.get("error")
    if isinstance(err, dict):  # OpenAI's shape
        return err["message"]
    return body.get("message") or err  # ours, or the Open Inference Protocol's


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("limit", list(OVER))
def test_every_inference_route_applies_the_same_per_request_limits(limited, route, limit):
    srv, versions = limited
    modality, make, words = OVER[limit]
    if route == "predict/upload" and modality == "text":
        pytest.skip("/predict/upload takes files (images or audio), not texts")
    task = MODALITIES[modality][0]
    path, kw = _route_request(route, modality, make(), versions[task])
    r = srv.post(path, **kw)
    assert r.status_code in (400, 413, 422), (route, limit, r.status_code, r.text[:300])
    message = _message(r)
    for w in words:
        assert w.lower() in message.lower(), (route, limit, message)
    # Within the limits the same route answers (the table's requests are well-formed).
    within = {"text": ["a"], "image": [png_bytes(size=(20, 20))], "audio": [_wav(0.5)]}[modality]
    path, kw = _route_request(route, modality, within, versions[task])
    assert srv.post(path, **kw).status_code == 200
    assert srv.internal_errors() == []


# ---- item 3: fit inputs are checked like predictions, before the job is accepted ------------
@pytest.mark.parametrize("case, body, words", [
    ("NUL in a text", {"texts": ["good", "ba\x00d"], "labels": ["x", "y"]}, ["texts[1]", "U+0000"]),
    ("lone surrogate", {"texts": ["good", "\ud800"], "labels": ["x", "y"]}, ["texts[1]", "U+D800"]),
    ("text over the cap", {"texts": ["good", "y" * 10_001], "labels": ["x", "y"]}, ["texts[1]", "10000"]),
    ("bidi label", {"texts": ["a", "b"], "labels": ["x", "y\u202e"]}, ["U+202E", "bidi"]),
    ("control label", {"texts": ["a", "b"], "labels": ["x", "y\x07"]}, ["U+0007", "control"]),
    ("labels colliding once NFC", {"texts": ["a", "b"], "labels": ["caf\u00e9", "cafe\u0301"]},
     ["NFC"]),
    ("label not in label_names", {"texts": ["a", "b"], "labels": ["x", "z"], "label_names": ["x", "y"]},
     ["'z'", "label_names"]),
    ("image over the pixel cap", {"images": [_b64(png_bytes(size=(8000, 6000)))], "labels": ["x"]},
     ["images[0]", "48000000 pixels"]),
])
def test_fit_inputs_get_the_predict_rules_at_once(srv, case, body, words):
    # json.dumps escapes a lone surrogate as \ud800 (httpx's json= cannot encode it at all)
    r = srv.post("/adapters/fitchecked/fit", admin=True, content=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), (case, r.status_code, r.text[:300])
    message = r.json()["message"]
    for w in words:
        assert w.lower() in message.lower(), (case, message)
    assert srv.internal_errors() == []


# ---- item 4: if_better swaps exactly the version it compared with ---------------------------
def _wait_job(srv, job_id: str, timeout_s: float = 600) -> dict:
    return wait_for_job(srv, job_id, timeout_s, interval_s=0.5)


def test_if_better_is_refused_when_another_version_landed_after_the_comparison(
        srv, tmp_path, text_backbone):
    texts = [f"example {i} " + ("good" if i % 2 else "bad") * (1 + i % 3) for i in range(24)]
    labels = ["pos" if i % 2 else "neg" for i in range(24)]
    r = srv.post("/adapters/raced/fit", admin=True,
                 json={"texts": texts, "labels": labels, "promote": "if_better"})
    assert r.status_code == 202, r.text
    # The task had no version when the job was accepted: the job compared with none. Another
    # version lands while the fit child starts (seconds: it imports torch and loads a backbone).
    other = srv.register_archive(make_archive(head_adapter(tmp_path / "raced", text_backbone, "raced")))
    assert other.status_code == 201, other.text
    job = _wait_job(srv, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["promoted"] is False and job["result"]["version"] is None
    assert "another change landed first" in job["result"]["refused"]
    assert srv.get("/adapters/raced").json()["active_version"] == other.json()["version"]
