"""Hardening, round 2, over real HTTP: one bad request never hurts another, nothing is
served as something it is not, memory stays bounded per request (``bentoml serve``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapters.format.archive import make_archive
from factories import head_adapter
from server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

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


def assert_error(r, status: int, *words: str) -> dict:
    """A JSON error body with ``status`` whose message names each of ``words``."""
    assert r.status_code == status, f"{r.status_code} != {status}: {r.text[:300]}"
    body = r.json()
    assert set(body) == {"error", "message", "problems"}, body
    for w in words:
        assert w.lower() in body["message"].lower(), f"{w!r} not in {body['message']!r}"
    return body


def peft_token_cls_dir(folder: Path, backbone_path: str, num_labels: int = 4) -> Path:
    """A plain PEFT directory for AutoModelForTokenClassification (task_type TOKEN_CLS)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForTokenClassification
    torch.manual_seed(0)
    base = AutoModelForTokenClassification.from_pretrained(backbone_path, num_labels=num_labels)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.TOKEN_CLS, r=4, lora_alpha=8,
                                            target_modules=["query", "value"]))
    model.save_pretrained(folder)
    return Path(folder)


# ---- issue 12: an unsupported PEFT task type is refused, not served as a classifier --------
def test_a_token_classification_peft_dir_is_refused_naming_its_task_type(srv, tiny_dir, tmp_path):
    folder = peft_token_cls_dir(tmp_path / "tok", str(tiny_dir / "text"))
    r = srv.register_archive(make_archive(folder), name="tagger")
    assert_error(r, 422, "task_type", "TOKEN_CLS")
    assert srv.get("/adapters/tagger").status_code == 404
    assert srv.internal_errors() == []
