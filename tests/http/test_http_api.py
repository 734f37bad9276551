"""Every endpoint over real HTTP against a real ``bentoml serve`` on the tiny backbones.

Scores are checked against an independent in-process computation (the backbone's
features through the adapter's own head weights, or PEFT's own ``PeftModel``), not
only against the server itself.
"""

from __future__ import annotations

import io
import shutil
import time

import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from support.factories import head_adapter, peft_lora_dir, peft_seq_cls_model
from support.http_helpers import (TEXTS, b64, expected_head_scores, peft_scores, png_bytes, predict_ok,
                          register_ok, scores_of)
from support.server import server, server_factory  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.server

IMAGES = [png_bytes((255, 0, 0)), png_bytes((0, 90, 200), (64, 64)), png_bytes((10, 200, 10), (20, 50))]


def test_health_ready_and_backbones(server, text_backbone, vision_backbone):
    for path in ("/healthz", "/livez", "/readyz"):
        assert server.get(path).status_code == 200
    got = {b["name"]: b for b in server.get("/backbones").json()["backbones"]}
    assert got["text"]["fingerprint"] == text_backbone.fingerprint
    assert got["vision"]["fingerprint"] == vision_backbone.fingerprint
    assert got["text"]["modality"] == "text" and got["vision"]["modality"] == "image"
    assert got["vision"]["preprocessing"] == {"image_size": 32}


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_register_head_archive_and_predict(server, tmp_path, text_backbone, fmt):
    name = f"sentiment-{fmt.replace('.', '')}"
    folder = head_adapter(tmp_path / "a", text_backbone, name, seed=11)
    reg = register_ok(server, folder, fmt)
    assert reg["name"] == name and reg["kind"] == "head" and reg["labels"] == ["neg", "pos"]
    assert len(reg["version"]) == 64 and reg["previous_version"] is None and reg["backbone"] == "text"
    body = predict_ok(server, name, texts=TEXTS)
    assert body["backbone"] == "text"
    (res,) = body["results"]
    assert res["task"] == name and res["version"] == reg["version"] and res["kind"] == "head"
    assert res["task_type"] == "single_label" and len(res["predictions"]) == len(TEXTS)
    for p in res["predictions"]:
        assert set(p["scores"]) == {"neg", "pos"} and p["label"] == max(p["scores"], key=p["scores"].get)
        assert p["score"] == p["scores"][p["label"]] and "labels" not in p
    expected = expected_head_scores(folder, text_backbone, TEXTS)
    assert torch.allclose(scores_of(res), expected, atol=1e-5)


def test_plain_peft_dir_over_http_matches_peft_model(server, tmp_path, text_backbone):
    """A PEFT save_pretrained dir (classifier in modules_to_save), name/labels given at upload."""
    src = str(text_backbone.source_path)
    folder = peft_lora_dir(tmp_path / "p", src, num_labels=3, seed=5)
    reg = register_ok(server, folder, "tar.gz", name="peft-topic", labels=["x", "y", "z"])
    assert reg["kind"] == "lora" and reg["labels"] == ["x", "y", "z"]
    (res,) = predict_ok(server, "peft-topic", texts=TEXTS)["results"]
    assert res["kind"] == "lora" and res["version"] == reg["version"]
    ref = peft_scores(peft_seq_cls_model(src, 3, seed=5), text_backbone, TEXTS)
    assert torch.allclose(scores_of(res), ref, atol=1e-4)
    assert (scores_of(res) - ref).abs().max() < 1e-4


def test_register_from_store_path(server, tmp_path, text_backbone):
    folder = head_adapter(tmp_path / "a", text_backbone, "from-store", seed=3, hidden=(8,))
    shutil.copytree(folder, server.store / "imports" / "from-store-v1")
    r = server.post("/adapters", admin=True, json={"store_path": "imports/from-store-v1"})
    assert r.status_code == 201, r.text
    (res,) = predict_ok(server, "from-store", texts=TEXTS[:2])["results"]
    assert res["version"] == r.json()["version"]
    assert torch.allclose(scores_of(res), expected_head_scores(folder, text_backbone, TEXTS[:2]), atol=1e-5)


def test_several_tasks_in_one_request_equal_each_alone(server, tmp_path, text_backbone):
    src = str(text_backbone.source_path)
    register_ok(server, head_adapter(tmp_path / "h1", text_backbone, "multi-h1", seed=1))
    register_ok(server, head_adapter(tmp_path / "h2", text_backbone, "multi-h2", labels=("a", "b", "c"),
                                     seed=2, hidden=(16,)))
    register_ok(server, peft_lora_dir(tmp_path / "l1", src, seed=3), name="multi-l1")
    tasks = ["multi-h2", "multi-l1", "multi-h1"]
    body = predict_ok(server, tasks, texts=TEXTS)
    assert [r["task"] for r in body["results"]] == tasks
    for res in body["results"]:
        (alone,) = predict_ok(server, res["task"], texts=TEXTS)["results"]
        assert alone["version"] == res["version"]
        assert torch.allclose(scores_of(res), scores_of(alone), atol=1e-5)


def test_images_base64_and_multipart_upload(server, tmp_path, vision_backbone):
    folder = head_adapter(tmp_path / "v", vision_backbone, "colors", labels=("r", "g", "b"), seed=4)
    register_ok(server, folder)
    (res,) = predict_ok(server, "colors", images=[b64(i) for i in IMAGES])["results"]
    pil = [Image.open(io.BytesIO(i)).convert("RGB") for i in IMAGES]
    expected = expected_head_scores(folder, vision_backbone, pil)
    assert torch.allclose(scores_of(res), expected, atol=1e-5)
    # A data URL is accepted too.
    (du,) = predict_ok(server, "colors", images=["data:image/png;base64," + b64(IMAGES[0])])["results"]
    assert torch.allclose(scores_of(du), expected[:1], atol=1e-5)
    files = [("files", (f"img{i}.png", data, "image/png")) for i, data in enumerate(IMAGES)]
    r = server.post("/predict/upload", files=files, data={"task": "colors"})
    assert r.status_code == 200, r.text
    (up,) = r.json()["results"]
    assert up["version"] == res["version"]
    assert torch.allclose(scores_of(up), expected, atol=1e-5)


def test_multi_label_task(server, tmp_path, text_backbone):
    folder = head_adapter(tmp_path / "m", text_backbone, "tags", labels=("x", "y", "z"), seed=9,
                          task_type="multi_label")
    register_ok(server, folder)
    (res,) = predict_ok(server, "tags", texts=TEXTS)["results"]
    assert res["task_type"] == "multi_label"
    for p in res["predictions"]:
        assert p["labels"] == [k for k, v in p["scores"].items() if v >= 0.5]


def test_list_show_rollback_and_delete(server, tmp_path, text_backbone):
    v1_dir = head_adapter(tmp_path / "v1", text_backbone, "lifecycle", seed=21)
    v2_dir = head_adapter(tmp_path / "v2", text_backbone, "lifecycle", seed=22)
    v1 = register_ok(server, v1_dir)["version"]
    reg2 = register_ok(server, v2_dir, "tar.gz")
    v2 = reg2["version"]
    assert v1 != v2 and reg2["previous_version"] == v1
    # Same bytes again: same content-addressed version, nothing new stored.
    assert register_ok(server, v2_dir)["version"] == v2

    listing = server.get("/adapters").json()
    assert listing["replica_id"] and listing["generation"] >= 3
    info = {a["name"]: a for a in listing["adapters"]}["lifecycle"]
    assert info["active_version"] == v2 and info["state"] == "ready" and info["kind"] == "head"
    assert info["backbone"] == "text" and info["labels"] == ["neg", "pos"]
    assert info["metrics"] == {"val_accuracy": 0.5}
    assert [v["version"] for v in info["versions"]] == [v1, v2]
    assert server.get("/adapters/lifecycle").json() == info

    def answer():
        (res,) = predict_ok(server, "lifecycle", texts=TEXTS)["results"]
        return res["version"], scores_of(res)

    version, s2 = answer()
    assert version == v2
    assert torch.allclose(s2, expected_head_scores(v2_dir, text_backbone, TEXTS), atol=1e-5)

    r = server.post("/adapters/lifecycle/activate", admin=True, json={"version": v1[:8]})
    assert r.status_code == 200, r.text
    assert r.json()["active_version"] == v1
    version, s1 = answer()
    assert version == v1 and not torch.allclose(s1, s2, atol=1e-3)
    assert torch.allclose(s1, expected_head_scores(v1_dir, text_backbone, TEXTS), atol=1e-5)

    r = server.delete("/adapters/lifecycle", admin=True)
    assert r.status_code == 200 and r.json() == {"name": "lifecycle", "deleted": True}
    assert server.get("/adapters/lifecycle").status_code == 404
    r = server.predict("lifecycle", texts=TEXTS)
    assert r.status_code == 404 and "not registered" in r.json()["message"]
    assert "lifecycle" not in {a["name"] for a in server.get("/adapters").json()["adapters"]}


def test_pin_a_lora(server, tmp_path, text_backbone):
    register_ok(server, peft_lora_dir(tmp_path / "l", str(text_backbone.source_path), seed=8),
                name="pinned-lora")
    r = server.post("/adapters/pinned-lora/pin", admin=True)
    assert r.status_code == 200 and r.json()["pinned"] is True
    r = server.post("/adapters/pinned-lora/pin", admin=True, json={"pinned": False})
    assert r.status_code == 200 and r.json()["pinned"] is False


def test_metrics_and_openapi(server, tmp_path, text_backbone):
    register_ok(server, head_adapter(tmp_path / "m", text_backbone, "metered", seed=1))
    predict_ok(server, "metered", texts=TEXTS)
    text = server.get("/metrics").text
    for needle in ('taskswap_task_requests_total{status="200",task="metered"}',
                   'taskswap_task_request_seconds_count{task="metered"}',
                   'taskswap_task_inputs_total{task="metered"} 4.0',
                   'taskswap_adapter_registrations_total{kind="head"}',
                   'taskswap_adapter_loads_total{kind="head"}', "taskswap_adapter_load_seconds_count",
                   "taskswap_adapters_loaded", "taskswap_batch_rows_count", "taskswap_batch_requests_count",
                   "taskswap_queue_rows", "taskswap_store_generation"):
        assert needle in text, needle
    assert 'status="500"' not in text
    paths = server.get("/docs.json").json()["paths"]
    for p in ("/predict", "/predict/upload", "/backbones", "/adapters", "/adapters/{name}",
              "/adapters/{name}/activate", "/adapters/{name}/pin"):
        assert p in paths, p
    assert "delete" in paths["/adapters/{name}"]


def gauges(server) -> dict[str, float]:
    """Every gauge sample on /metrics, by name (one process: no pid label to sum over)."""
    return {s.name: s.value for fam in text_string_to_metric_families(server.get("/metrics").text)
            if fam.type == "gauge" for s in fam.samples}


def test_residency_pressure_gauges_follow_a_lora_load(server, tmp_path, text_backbone):
    """The autoscaling signals (deploy/hpa.yaml): resident LoRA bytes against the budget."""
    register_ok(server, peft_lora_dir(tmp_path / "pressure", str(text_backbone.source_path), seed=3),
                name="pressure-lora")
    predict_ok(server, "pressure-lora", texts=TEXTS)
    budget = 512 << 20  # TASKSWAP_ADAPTER_BUDGET_MB's default
    for _ in range(100):  # the watcher publishes the gauges every sync (0.2 s here)
        g = gauges(server)
        if g.get("taskswap_adapter_resident_bytes", 0) > 0:
            break
        time.sleep(0.1)
    assert g["taskswap_adapter_budget_bytes"] == budget
    assert g["taskswap_adapter_resident_bytes"] > 0
    assert g["taskswap_residency_pressure"] == pytest.approx(g["taskswap_adapter_resident_bytes"] / budget)
    assert "taskswap_queue_rows" in g


def test_list_adapters_pages_and_filters_by_name(server, tmp_path, text_backbone):
    for i in range(5):
        register_ok(server, head_adapter(tmp_path / f"p{i}", text_backbone, f"pager-{i}", seed=i))
    every = server.get("/adapters").json()
    assert every["next_offset"] is None and every["total"] == len(every["adapters"]) >= 5
    seen, offset = [], 0
    while offset is not None:  # two at a time, in name order, every pager task exactly once
        r = server.get("/adapters", params={"name": "PAGER-", "limit": 2, "offset": offset}).json()
        assert r["total"] == 5 and len(r["adapters"]) <= 2
        seen += [a["name"] for a in r["adapters"]]
        offset = r["next_offset"]
    assert seen == [f"pager-{i}" for i in range(5)]
    assert server.get("/adapters", params={"name": "no-such-task"}).json()["adapters"] == []
    for params, field in [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
                          ({"name": "x" * 98}, "name")]:  # a filter up to a qualified name's 97 characters
        r = server.get("/adapters", params=params)
        assert r.status_code == 422 and field in r.text, (params, r.text)
    # a typo in a query parameter is named, not silently ignored (which would list every task)
    r = server.get("/adapters", params={"limt": 2})
    assert r.status_code == 422 and "limt" in r.text and "limit" in r.text, r.text
    assert server.get("/adapters", params={"limit": 2}).status_code == 200
