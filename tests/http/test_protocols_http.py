"""The ecosystem's protocols on the real server, spoken by their own third-party clients.

- ``POST /embed`` and ``/predict`` with ``"embed": true``: rows equal the backbone's pooled
  features computed in-process (raw or L2-normalised), and the head scores beside them
  are the head applied to those rows.
- The official ``openai`` package: ``/v1/models``, ``/v1/embeddings`` for the text and the
  image backbone, float and base64 encodings, ``usage`` token counts, refused ``dimensions``,
  a wrong API key.
- ``tritonclient[http]`` (Open Inference Protocol / KServe v2): health, server and model
  metadata, inference for a text and an image task in JSON and in Triton's binary tensor
  format, and a version-pinned call after a rollback that answers with the pinned version.
- Auth scopes, body limits, error shapes and metrics on the new routes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from support.factories import head_adapter
from support.http_helpers import TEXTS, b64, expected_head_scores, png_bytes, register_ok
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server

TOKEN = "inference-token-for-protocol-tests"
IMAGES = [png_bytes((200, 30, 30)), png_bytes((20, 160, 40), (33, 21)), png_bytes((10, 20, 250))]


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone, vision_backbone):
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                             env={"TASKSWAP_INFERENCE_TOKEN": TOKEN, "TASKSWAP_MAX_UPLOAD_BYTES": "300000"})
    root = tmp_path_factory.mktemp("adapters")
    s.folders = {"sent": head_adapter(root / "sent", text_backbone, "sent", labels=("neg", "pos", "mixed"), seed=1),
                 "img": head_adapter(root / "img", vision_backbone, "img", labels=("red", "green"), seed=2)}
    for folder in s.folders.values():
        register_ok(s, folder)
    return s


def pil(data: bytes):
    import io

    from PIL import Image
    return Image.open(io.BytesIO(data)).convert("RGB")


def close(a, b, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(np.asarray(a), dtype=torch.float32),
                               torch.as_tensor(np.asarray(b), dtype=torch.float32), atol=atol, rtol=1e-4)


# ---- /embed and /predict embed -----------------------------------------------------------
def test_embed_rows_equal_the_backbone_features(srv, text_backbone, vision_backbone):
    r = srv.post("/embed", json={"texts": TEXTS, "normalize": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["backbone"], body["pooling"], body["normalized"]) == ("text", text_backbone.default_pooling, False)
    assert body["dimensions"] == text_backbone.hidden_size
    close(body["embeddings"], text_backbone.embed(TEXTS))
    r = srv.post("/embed", json={"texts": TEXTS, "pooling": "cls"})  # normalised by default
    close(r.json()["embeddings"], torch.nn.functional.normalize(text_backbone.embed(TEXTS, "cls"), dim=-1))
    r = srv.post("/embed", json={"images": [b64(x) for x in IMAGES], "normalize": False})
    assert r.status_code == 200, r.text
    assert r.json()["backbone"] == "vision"
    close(r.json()["embeddings"], vision_backbone.embed([pil(x) for x in IMAGES]))


def test_predict_embed_returns_the_rows_its_heads_read(srv, text_backbone):
    r = srv.post("/predict", json={"task": "sent", "texts": TEXTS, "embed": True})
    assert r.status_code == 200, r.text
    body = r.json()
    emb = torch.tensor(body["embeddings"])
    close(emb, text_backbone.embed(TEXTS))
    close([list(p["scores"].values()) for p in body["results"][0]["predictions"]],
          expected_head_scores(srv.folders["sent"], text_backbone, TEXTS))
    assert "embeddings" not in srv.predict("sent", texts=TEXTS).json()  # only when asked


@pytest.mark.parametrize("body, status, words", [
    ({"texts": ["x"], "images": ["x"]}, 422, "exactly one of 'texts', 'images' or 'audio'"),
    ({"texts": []}, 400, "texts is empty"),
    ({"texts": ["x"], "backbone": "nope"}, 404, "backbone 'nope'"),
    ({"images": ["aGVsbG8="], "pooling": "cls"}, 400, "not a decodable image"),
    ({"images": [b64(IMAGES[0])], "pooling": "cls"}, 400, "pooling 'cls' is not available"),
    ({"texts": ["x"], "backbone": "vision"}, 400, "takes images"),
    ({"texts": ["x"], "dims": 3}, 422, "dims"),
])
def test_embed_refuses_bad_input_clearly(srv, body, status, words):
    r = srv.post("/embed", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]


def test_predict_embed_options_need_embed(srv):
    r = srv.post("/predict", json={"task": "sent", "texts": ["x"], "normalize": True})
    assert r.status_code == 422 and "set \"embed\": true" in r.json()["message"]


# ---- OpenAI ------------------------------------------------------------------------------
def openai_client(srv, key=TOKEN):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0, timeout=60)


def test_openai_package_lists_models_and_embeds_text(srv, text_backbone):
    client = openai_client(srv)
    assert sorted(m.id for m in client.models.list()) == ["text", "vision"]
    assert client.models.retrieve("text").id == "text"
    expected = torch.nn.functional.normalize(text_backbone.embed(TEXTS), dim=-1)
    got = client.embeddings.create(model="text", input=TEXTS)  # the package asks for base64
    assert [d.index for d in got.data] == [0, 1, 2, 3] and got.model == "text"
    close([d.embedding for d in got.data], expected)
    as_float = client.embeddings.create(model="text", input=TEXTS[1], encoding_format="float")
    close([as_float.data[0].embedding], expected[1:2])
    tok = text_backbone.preprocessor.tokenizer
    ids = tok(TEXTS, truncation=True, max_length=text_backbone.spec.max_length)["input_ids"]
    n_tokens = sum(len(x) for x in ids)
    assert got.usage.prompt_tokens == got.usage.total_tokens == n_tokens
    same = client.embeddings.create(model="text", input=TEXTS, dimensions=text_backbone.hidden_size)
    close([d.embedding for d in same.data], expected)


def test_openai_package_embeds_images_with_the_vision_backbone(srv, vision_backbone):
    client = openai_client(srv)
    urls = [f"data:image/png;base64,{b64(x)}" for x in IMAGES]
    got = client.embeddings.create(model="vision", input=urls)
    expected = torch.nn.functional.normalize(vision_backbone.embed([pil(x) for x in IMAGES]), dim=-1)
    close([d.embedding for d in got.data], expected)
    assert got.usage.prompt_tokens == 0


def test_openai_errors_in_openai_shape(srv, text_backbone):
    openai = pytest.importorskip("openai")
    client = openai_client(srv)
    with pytest.raises(openai.BadRequestError, match=f"returns {text_backbone.hidden_size}-d vectors"):
        client.embeddings.create(model="text", input="x", dimensions=8)
    with pytest.raises(openai.NotFoundError, match="backbone 'gpt-4' is not served"):
        client.embeddings.create(model="gpt-4", input="x")
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client.embeddings.create(model="text", input=[[101, 102]])
    with pytest.raises(openai.AuthenticationError, match="wrong bearer token"):
        openai_client(srv, key="not-the-token").embeddings.create(model="text", input="x")
    r = srv.post("/v1/embeddings", json={"model": "text", "input": "x", "encoding_format": "int8"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "validation_error" and "encoding_format" in err["message"]
    r = srv.post("/v1/embeddings", json={"model": "text", "input": ["x" * 100] * 4000})
    assert r.status_code == 413 and "TASKSWAP_MAX_UPLOAD_BYTES" in r.json()["error"]["message"]


# ---- Open Inference Protocol (KServe v2) with tritonclient -----------------------------------
def auth() -> dict:
    """Fresh each call: tritonclient writes its own headers into the dict it is given."""
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def triton(srv):
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=srv.url.removeprefix("http://"), network_timeout=60)
    yield http, client
    client.close()


def v2_infer(http, client, task, items, binary: bool, version: str = "", input_name: str = "text",
             outputs=("label", "scores")):
    arr = np.array(items, dtype=object)
    inp = http.InferInput(input_name, [len(items)], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=binary)
    outs = [http.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(task, [inp], model_version=version, outputs=outs, headers=auth())


def test_tritonclient_health_and_metadata(srv, triton):
    http, client = triton
    assert client.is_server_live(headers=auth()) and client.is_server_ready(headers=auth())
    assert client.is_server_live() and client.is_server_ready()  # probes send no token
    assert client.get_server_metadata(headers=auth())["name"] == "taskswap"
    assert client.is_model_ready("sent", headers=auth())
    meta = client.get_model_metadata("sent", headers=auth())
    active = srv.get("/adapters/sent").json()["active_version"]
    assert meta["versions"] == [active] and meta["parameters"]["version"] == active
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"label": [-1], "score": [-1], "scores": [-1, 3]}
    assert json.loads(meta["parameters"]["output_names"]) == ["neg", "pos", "mixed"]
    assert client.get_model_metadata("img", headers=auth())["inputs"][0]["name"] == "image"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infers_a_text_task(srv, triton, text_backbone, binary):
    http, client = triton
    res = v2_infer(http, client, "sent", TEXTS, binary)
    expected = expected_head_scores(srv.folders["sent"], text_backbone, TEXTS)
    close(res.as_numpy("scores"), expected)
    labels = ["neg", "pos", "mixed"]
    got = [x.decode() if isinstance(x, bytes) else x for x in res.as_numpy("label")]
    assert got == [labels[i] for i in expected.argmax(1).tolist()]
    assert res.get_response()["model_version"] == srv.get("/adapters/sent").json()["active_version"]


@pytest.mark.parametrize("binary", [False, True], ids=["json-base64", "binary-raw-bytes"])
def test_tritonclient_infers_an_image_task(srv, triton, vision_backbone, binary):
    http, client = triton
    items = IMAGES if binary else [b64(x) for x in IMAGES]  # raw file bytes travel in binary only
    res = v2_infer(http, client, "img", items, binary, input_name="image")
    close(res.as_numpy("scores"), expected_head_scores(srv.folders["img"], vision_backbone,
                                                       [pil(x) for x in IMAGES]))


def test_tritonclient_version_pinned_infer_after_rollback(srv, triton, text_backbone, tmp_path):
    http, client = triton
    f1 = head_adapter(tmp_path / "v1", text_backbone, "roll", seed=11)
    f2 = head_adapter(tmp_path / "v2", text_backbone, "roll", seed=12)
    v1, v2 = register_ok(srv, f1)["version"], register_ok(srv, f2)["version"]
    r = srv.post("/adapters/roll/activate", admin=True, json={"version": v1})  # roll back to v1
    assert r.status_code == 200 and r.json()["active_version"] == v1
    s1 = expected_head_scores(f1, text_backbone, TEXTS)
    s2 = expected_head_scores(f2, text_backbone, TEXTS)
    assert not torch.allclose(s1, s2)
    active = v2_infer(http, client, "roll", TEXTS, True)
    assert active.get_response()["model_version"] == v1
    close(active.as_numpy("scores"), s1)
    for version in (v2, v2[:12]):  # the full id or a unique prefix
        pinned = v2_infer(http, client, "roll", TEXTS, True, version=version)
        assert pinned.get_response()["model_version"] == v2
        close(pinned.as_numpy("scores"), s2)
    assert client.get_model_metadata("roll", v2, headers=auth())["parameters"]["version"] == v2
    assert client.get_model_metadata("roll", headers=auth())["versions"] == [v1, v2]
    assert client.is_model_ready("roll", v2[:8], headers=auth())


def test_tritonclient_regression_task_answers_values(srv, triton, text_backbone, tmp_path):
    """The tensors follow the task type's answer: a regression task gives its named values."""
    from support.factories import regression_head
    scaling = {"valence": {"mean": 5.0, "std": 2.0}, "arousal": {"mean": -1.0, "std": 0.5}}
    folder, head = regression_head(tmp_path / "r", text_backbone, "affect", ("valence", "arousal"), scaling)
    register_ok(srv, folder)
    http, client = triton
    meta = client.get_model_metadata("affect", headers=auth())
    assert meta["outputs"] == [{"name": "values", "datatype": "FP32", "shape": [-1, 2]}]
    res = v2_infer(http, client, "affect", TEXTS, True, outputs=("values",))
    assert json.loads(res.get_output("values")["parameters"]["names"]) == ["valence", "arousal"]
    with torch.no_grad():
        want = head(text_backbone.embed(TEXTS, "mean")) * torch.tensor([2.0, 0.5]) + torch.tensor([5.0, -1.0])
    close(res.as_numpy("values"), want, atol=1e-4)
    served = srv.predict("affect", texts=TEXTS).json()["results"][0]["predictions"]
    close(res.as_numpy("values"), [[p["values"]["valence"], p["values"]["arousal"]] for p in served])


def test_tritonclient_sees_protocol_errors(srv, triton):
    http, client = triton
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match="task 'nope' is not registered"):
        v2_infer(http, client, "nope", ["x"], False)
    with pytest.raises(InferenceServerException, match="this model's input is 'text'"):
        v2_infer(http, client, "sent", ["x"], False, input_name="image")
    with pytest.raises(InferenceServerException, match="does not exist"):
        v2_infer(http, client, "sent", ["x"], False, version="0" * 16)
    with pytest.raises(InferenceServerException, match="wrong bearer token"):
        client.infer("sent", [http.InferInput("text", [1], "BYTES")], headers={"Authorization": "Bearer no"})


@pytest.mark.parametrize("body, status, words", [
    ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}, 400, "holds 2 elements"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, 400, "must be 'BYTES'"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}, 400, "not strings"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
      "outputs": [{"name": "logits"}]}, 400, "outputs ['logits'] are unknown"),
    ({"inputs": []}, 422, "inputs"),
])
def test_v2_refuses_bad_tensors_with_the_protocol_error_shape(srv, body, status, words):
    r = srv.post("/v2/models/sent/infer", json=body)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and words in r.json()["error"]


def test_v2_binary_request_that_lies_about_its_sizes_is_a_400(srv):
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 100}}]}).encode()
    r = srv.post("/v2/models/sent/infer", content=header + b"\x05\x00\x00\x00hi",
                 headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "runs past the body" in r.json()["error"]


# ---- auth and metrics on every new route -------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("POST", "/embed"), ("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/v2"),
    ("GET", "/v2/models/sent"), ("GET", "/v2/models/sent/ready"), ("POST", "/v2/models/sent/infer")])
def test_new_routes_need_the_inference_token(srv, method, path):
    r = srv.client.request(method, path, json={})
    assert r.status_code == 401, r.text
    r = srv.client.request(method, path, json={}, headers={"Authorization": f"Bearer {srv.admin}"})
    assert r.status_code != 401  # the admin token is a superset


@pytest.mark.parametrize("path, body", [("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True}),
                                        ("/livez", None), ("/readyz", None)])
def test_health_probes_need_no_token(srv, path, body):
    """KServe/Triton probes send no token: the v2 health routes are open like /livez and /readyz."""
    assert srv.inference  # this server requires the inference token everywhere else
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer not-the-token"}):
        r = srv.client.get(path, headers=headers)
        assert r.status_code == 200, (path, headers, r.text)
        if body is not None:
            assert r.json() == body


def test_metrics_count_the_new_apis(srv):
    srv.post("/embed", json={"texts": ["x"]})
    srv.post("/v2/models/sent/infer", json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                                        "data": ["x"]}]})
    srv.get("/v1/models")
    text = srv.get("/metrics").text
    for api in ("embed", "openai", "v2"):
        assert f'taskswap_api_requests_total{{api="{api}",status="200"}}' in text, api
    assert 'taskswap_task_requests_total{status="200",task="sent"}' in text or \
        'taskswap_task_requests_total{task="sent",status="200"}' in text
    assert 'taskswap_embedded_inputs_total{backbone="text"}' in text
    assert srv.internal_errors() == []
