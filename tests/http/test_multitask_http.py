"""Multitask adapters over HTTP on the real server: a shared adaptation and the tasks riding
on it register as archives, answer like each task registered alone as an ordinary LoRA task,
and every wrong reference is a 4xx naming the problem."""

from __future__ import annotations

import pytest
import torch

from adapters.format.archive import make_archive
from support.http_helpers import assert_error, predict_ok, register_ok
from support.multitask_factories import lora_task_dir, multitask_task_dir, shared_lora_dir
from support.server import server, server_factory  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.server

TEXTS = ["good movie", "the plot was awful and boring", "fun fun fun"]
TASKS = {"mt-sentiment": ("neg", "pos"), "mt-topic": ("film", "food", "news")}


def scores(res) -> torch.Tensor:
    return torch.tensor([list(p["scores"].values()) for p in res["predictions"]])


def test_shared_adaptation_over_http(server, tmp_path, text_backbone):
    base_dir = shared_lora_dir(tmp_path / "base", text_backbone, "mt-base", seed=3)
    base = register_ok(server, base_dir)
    assert base["kind"] == "shared_lora"
    for i, (task, labels) in enumerate(TASKS.items()):
        reg = register_ok(server, multitask_task_dir(tmp_path / task, text_backbone, task, "mt-base", None,
                                                     labels, seed=20 + i))
        assert reg["kind"] == "multitask"
        register_ok(server, lora_task_dir(tmp_path / f"{task}-a", text_backbone, f"{task}-alone", base_dir,
                                          labels, seed=20 + i))
    info = server.get("/adapters/mt-topic").json()
    assert info["versions"][-1]["shared"] == f"mt-base@{base['version']}"

    body = predict_ok(server, list(TASKS), texts=TEXTS)
    for task, res in zip(TASKS, body["results"]):
        (alone,) = predict_ok(server, f"{task}-alone", texts=TEXTS)["results"]
        assert res["kind"] == "multitask"
        assert torch.allclose(scores(res), scores(alone), atol=1e-5), task

    assert_error(server.predict("mt-base", texts=TEXTS), 400, "shared adaptation", "rides on it")
    r = server.register_archive(make_archive(
        multitask_task_dir(tmp_path / "bad", text_backbone, "mt-bad", "mt-none", None), "zip"), filename="a.zip")
    assert_error(r, 409, "mt-none", "register the shared adaptation first")
    r = server.register_archive(make_archive(
        multitask_task_dir(tmp_path / "wide", text_backbone, "mt-wide", "mt-base", None, input_dim=7), "zip"),
        filename="a.zip")
    assert_error(r, 409, "input_dim is 7")

    assert_error(server.delete("/adapters/mt-base", admin=True), 409, "mt-sentiment", "mt-topic")
    assert server.delete("/adapters/mt-topic", admin=True).status_code == 200
    assert server.get("/adapters/mt-base").status_code == 200
    predict_ok(server, "mt-sentiment", texts=TEXTS)  # still answers on the adaptation
