"""Fit examples checked and downscaled before a job; fit job errors fit to show a client."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from adapters.errors import Conflict, InvalidInput
from adapters.format import BackboneRef, Manifest
from adapters.format.labels import label_problems
from adapters.redact import redact
from adapters.store.base import EXPECT_NO_VERSION, Alias, check_expected
from service.fit_inputs import check_fit_examples
from service.inputs import InputLimits
from service.rollout_schemas import FitRequest
from training import fit_job


def _png(size) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_images_reach_the_fit_child_downscaled():
    body = FitRequest(images=[_png((3000, 2000)), _png((40, 30))], labels=["a", "b"])
    ex = check_fit_examples(body, InputLimits(image_decode_side=448))
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in ex.images]
    assert max(sizes[0]) <= 448 and sizes[1] == (40, 30)


def test_the_request_pixel_budget_holds_for_fits():
    body = FitRequest(images=[_png((100, 100))] * 3, labels=["a", "b", "a"])
    with pytest.raises(InvalidInput, match="30000 pixels"):
        check_fit_examples(body, InputLimits(max_request_pixels=25_000))


def test_labels_are_nfc_normalised():
    body = FitRequest(texts=["x", "y"], labels=["cafe\u0301", "tea"])
    assert check_fit_examples(body, InputLimits()).labels == ["caf\u00e9", "tea"]


def test_a_failed_fit_names_no_host_path(tmp_path):
    missing = tmp_path / "no-such-backbone"
    spec = {"name": "t", "texts": ["a", "b", "c", "d"], "labels": ["x", "y", "x", "y"],
            "backbone": {"name": "text", "source": str(missing)}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = fit_job.main([str(tmp_path / "spec.json"), str(tmp_path / "out")])
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert code != 0 and doc["status"] == "failed"
    shown = json.dumps(doc)
    assert str(tmp_path) not in shown and "0x" not in shown, shown


@pytest.mark.parametrize("message, hidden", [
    ("<tokenizers.Tokenizer object at 0x7f3a2c1d5e10> broke", "0x7f3a"),
    ("cannot open /root/.cache/taskswap/store/x/head.safetensors", "/root/.cache"),
    ('File "/work/x/.venv/lib/python3.11/site-packages/torch/nn.py", line 3', "site-packages")])
def test_redact_hides_addresses_and_host_paths(message, hidden):
    assert hidden not in redact(message)


def test_expecting_no_version_conflicts_once_one_is_active():
    check_expected("t", None, EXPECT_NO_VERSION)
    alias = Alias(name="t", active="ab" * 32, versions=[], updated_at="2026-01-01T00:00:00Z")
    with pytest.raises(Conflict, match="no active version was expected"):
        check_expected("t", alias, EXPECT_NO_VERSION)


@pytest.mark.parametrize("labels, words", [
    (["ok", "a\u202eb"], "U+202E (a format or bidi control character)"),
    (["ok", "zero\u200bwidth"], "U+200B"),
    (["caf\u00e9", "cafe\u0301"], "the same label once NFC-normalised")])
def test_the_label_rule_refuses_format_characters_and_nfc_collisions(labels, words):
    assert any(words in p for p in label_problems(labels)), label_problems(labels)


def test_manifest_labels_are_stored_nfc():
    m = Manifest(name="t", kind="head", labels=["cafe\u0301", "tea"], backbone=BackboneRef(name="text"))
    assert m.labels == ["caf\u00e9", "tea"]
